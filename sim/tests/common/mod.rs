//! Helpers shared by the simulator's command-line tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;
use std::process::Command;

/// Path of a shipped scenario, as a string for the command line.
pub fn scenario_path(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

/// What a run of the binary printed and returned.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// The one line printed on stderr, without its newline; fails unless stderr is exactly one
    /// non-empty line.
    pub fn one_line(&self) -> &str {
        let line = self.stderr.strip_suffix('\n').unwrap_or(&self.stderr);
        assert!(
            !line.trim().is_empty() && !line.contains('\n'),
            "expected exactly one line on stderr, got {:?}",
            self.stderr
        );
        line
    }
}

/// Runs `tierswarm-sim` with `args`.
pub fn sim(args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_tierswarm-sim"))
        .args(args)
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
