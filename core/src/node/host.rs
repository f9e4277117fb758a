//! One action loop for every embedder: a [`Host`] does what the node asks, one method per kind
//! of effect, and [`drive`] polls the node and feeds the follow-up inputs back in one
//! documented order. The simulator, the test harness, the io session, the flight recorder's
//! replay and the examples all run the node through it, so the same core behaves the same
//! under each.
//!
//! # The order of follow-up inputs
//!
//! Some actions have a consequence the node must hear about: a served unit was sent
//! ([`Input::UnitSent`]) or could not be ([`Input::UnitUnavailable`]), a stored unit was
//! verified ([`Input::UnitComplete`]) or failed ([`Input::UnitFailed`]). A host that knows the outcome at once returns it from
//! [`Host::serve`] or [`Host::store_unit`]; [`drive`] then
//!
//! 1. executes every action the node has ready, in the order handed out (priority classes
//!    first, FIFO within a class), collecting the outcomes known at once in a FIFO;
//! 2. when the node has no action left, feeds the first collected outcome as an input at the
//!    same `now` (after telling the host with [`Host::follow_up`]), and goes back to 1;
//! 3. returns when the node has no action and no outcome is left.
//!
//! So the actions of one input are all executed before any of their consequences is fed, and
//! consequences are fed in the order of the actions that caused them. A host that learns an
//! outcome later (a socket write that completes, verification on a worker thread) returns
//! [`Upload::Later`] / [`Verdict::Later`] and feeds the input itself when it knows, then calls
//! [`drive`] again.

use super::api::{Action, DisconnectReason, Event, Input};
use super::peer::PeerId;
use super::Node;
use crate::time::Timestamp;
use crate::trace::Stamped;
use crate::wire::{Message, Proof};
use bytes::Bytes;
use std::collections::VecDeque;

/// What became of a unit handed to [`Host::serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Upload {
    /// Written to the connection already: [`drive`] reports [`Input::UnitSent`].
    Sent,
    /// Being written: the host reports [`Input::UnitSent`] when done.
    Later,
    /// It could not be read, or no longer matches its proof: [`drive`] reports
    /// [`Input::UnitUnavailable`] and the node answers the request with a reject.
    Failed,
}

/// What became of a unit handed to [`Host::store_unit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Verified against the content root and written: [`drive`] reports
    /// [`Input::UnitComplete`].
    Verified,
    /// It failed verification: [`drive`] reports [`Input::UnitFailed`] (the node then drops
    /// its sender).
    Failed,
    /// Being verified: the host reports the outcome when done.
    Later,
}

/// What an embedder does for the node. One method per kind of effect; the node has already
/// done its own bookkeeping for each (a disconnected peer is released, a persisted store is
/// final).
pub trait Host {
    /// Sends `msg` on connection `peer`.
    fn send(&mut self, peer: PeerId, msg: Message);
    /// Reads `unit` and sends it to `peer` in a TRANSFER with its proof.
    fn serve(&mut self, peer: PeerId, unit: u64) -> Upload;
    /// Verifies `data` (unit `unit`, from `peer`) against the content root and writes it.
    /// Nothing may be marked available or served before it is verified.
    fn store_unit(&mut self, peer: PeerId, unit: u64, data: Bytes, proof: Option<Proof>)
        -> Verdict;
    /// Writes the encoded availability store atomically.
    fn persist(&mut self, store: Bytes);
    /// Closes connection `peer`.
    fn disconnect(&mut self, peer: PeerId, reason: DisconnectReason);
    /// News (progress, completion, peers ready, drained).
    fn event(&mut self, event: Event) {
        let _ = event;
    }
    /// A trace record (only with tracing on).
    fn trace(&mut self, record: Stamped) {
        let _ = record;
    }
    /// [`drive`] is about to feed `input`, a follow-up of an earlier action, at `now`
    /// (recorders log it as an input of its own).
    fn follow_up(&mut self, now: Timestamp, input: &Input) {
        let _ = (now, input);
    }
}

/// Executes every action `node` has ready on `host`, feeding back the outcomes the host knows
/// at once, in the order described in the [module docs](self). Call it after every
/// [`Node::handle_input`] and [`Node::handle_timeout`].
pub fn drive<H: Host + ?Sized>(node: &mut Node, now: Timestamp, host: &mut H) {
    let mut follow_ups: VecDeque<Input> = VecDeque::new();
    loop {
        while let Some(action) = node.poll_action() {
            if let Some(input) = execute(host, action) {
                follow_ups.push_back(input);
            }
        }
        let Some(input) = follow_ups.pop_front() else {
            return;
        };
        host.follow_up(now, &input);
        node.handle_input(now, input);
    }
}

/// Runs one action on `host`; returns the follow-up input it produced at once, if any.
fn execute<H: Host + ?Sized>(host: &mut H, action: Action) -> Option<Input> {
    match action {
        Action::Send { peer, msg } => host.send(peer, msg),
        Action::Serve { peer, unit } => {
            return match host.serve(peer, unit) {
                Upload::Sent => Some(Input::UnitSent { peer, unit }),
                Upload::Later => None,
                Upload::Failed => Some(Input::UnitUnavailable { peer, unit }),
            }
        }
        Action::StoreUnit {
            peer,
            unit,
            data,
            proof,
        } => {
            return match host.store_unit(peer, unit, data, proof) {
                Verdict::Verified => Some(Input::UnitComplete { unit }),
                Verdict::Failed => Some(Input::UnitFailed { peer, unit }),
                Verdict::Later => None,
            }
        }
        Action::Persist { store } => host.persist(store),
        Action::Disconnect { peer, reason } => host.disconnect(peer, reason),
        Action::Event(e) => host.event(e),
        Action::Trace(t) => host.trace(t),
    }
    None
}
