//! A tmpfs of limited size mounted over a directory: a disk that fills.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::run_tool;

/// A tmpfs mounted over a directory; unmounted (lazily) when dropped.
/// Mounting needs root, as CI runs; without it the test fails.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Result<Tmpfs> {
        let mut command = std::process::Command::new("mount");
        command
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir);
        run_tool(&mut command, Duration::from_secs(30))?
            .expect_success()
            .context("mounting a tmpfs (the test needs root)")?;
        Ok(Tmpfs(dir.to_path_buf()))
    }

    pub fn resize(&self, size: &str) -> Result<()> {
        let mut command = std::process::Command::new("mount");
        command
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0);
        run_tool(&mut command, Duration::from_secs(30))?.expect_success()?;
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
