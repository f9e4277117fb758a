//! Runs a scenario: drives the protocol nodes over the simulated network.

use crate::report::Report;
use crate::{RunOptions, Scenario, SimError};

// TODO(lead): engine — replace this file with the event loop driving tierswarm-core nodes.

/// Runs `scenario` with `opts` and returns its report.
///
/// Not implemented yet: always returns [`SimError::NotYetImplemented`].
pub fn run(scenario: &Scenario, opts: &RunOptions) -> Result<Report, SimError> {
    let _ = (scenario, opts);
    Err(SimError::NotYetImplemented)
}
