//! What a sandbox is created with, stored with it so `msb start` brings the
//! same machine back.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use crate::cli::MachineArgs;

/// A sandbox's definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    /// VM size, kernel, mounts (in the CLI's grammar), environment, workdir.
    pub machine: MachineArgs,
    /// OCI image of the root filesystem (the embedded default root when
    /// absent).
    #[serde(default)]
    pub image: Option<String>,
    /// Directory relative host paths in mounts are resolved from (the
    /// creator's working directory).
    pub cwd: PathBuf,
}

/// Checks a sandbox name: the same rules as volume names (1..=63 bytes of
/// `[A-Za-z0-9_.-]`, not starting with `.` or `-`).
pub fn validate_name(name: &str) -> Result<()> {
    volumes::validate_name(name).map_err(|e| {
        let why = e.to_string().replace("volume name", "sandbox name");
        Error::Invalid(format!("invalid sandbox name {name:?}: {why}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_volume_rules() {
        validate_name("web-1").unwrap();
        for bad in ["", "../x", "a/b", "-rf", ".hidden", &"x".repeat(64)] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains("sandbox name"), "{e}");
        }
    }

    #[test]
    fn spec_round_trips() {
        let spec = SandboxSpec {
            machine: MachineArgs {
                volumes: vec!["./src:/app:ro".into()],
                ..MachineArgs::default()
            },
            image: Some("alpine:latest".into()),
            cwd: "/home/u".into(),
        };
        let text = serde_json::to_string(&spec).unwrap();
        let back: SandboxSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back.machine.volumes, spec.machine.volumes);
        assert_eq!(back.machine.cpus, 1);
        assert_eq!(back.image, spec.image);
    }
}
