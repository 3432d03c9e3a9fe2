//! Child processes of the harness, each killed when its guard drops (also
//! on panic), with its output kept in a log file for the failure message.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

/// The program every component runs from: this package's `e2e` binary,
/// which becomes the device plugin or the extender by the name it is
/// started under (see [`crate::multicall`]).
#[derive(Debug, Clone)]
pub struct Programs {
    pub exe: PathBuf,
}

impl Programs {
    /// The `e2e` binary at `exe`.
    pub fn new(exe: impl Into<PathBuf>) -> Programs {
        Programs { exe: exe.into() }
    }

    /// The running `e2e` binary (for the demo).
    pub fn current() -> Result<Programs> {
        Ok(Programs::new(
            std::env::current_exe().context("locating the running program")?,
        ))
    }
}

/// A running child process; killed on drop.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `programs.exe` under the name `arg0` with `args`, writing its
    /// stdout and stderr to `log`.
    pub fn spawn(
        programs: &Programs,
        arg0: &str,
        name: &str,
        args: &[String],
        envs: &[(&str, String)],
        log: &Path,
    ) -> Result<Process> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file")?;
        let mut cmd = Command::new(&programs.exe);
        cmd.arg0(arg0)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .env_remove("KUBECONFIG")
            .env(
                "RUST_LOG",
                std::env::var("E2E_COMPONENT_LOG").unwrap_or_else(|_| "info".into()),
            )
            .kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", programs.exe.display()))?;
        tracing::debug!(name, pid = child.id(), "started");
        Ok(Process {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Kills the process (SIGKILL, as a crash or an OOM kill would) and reaps it.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    /// Stops the process as Kubernetes does (SIGTERM, as on a rolling
    /// update) and reaps it; SIGKILL if it has not exited within 10 s.
    pub async fn terminate(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            self.kill().await;
        }
    }

    /// Whether it exited on its own, with its status.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of its output.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A free loopback port. Another process could take it before the child
/// binds it; on loopback in a test run that does not happen in practice,
/// and a child that cannot bind exits with a message naming the address.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}
