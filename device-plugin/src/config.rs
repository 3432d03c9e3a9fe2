//! Configuration: flags, each with an environment variable, and an optional
//! YAML file (`--config`) whose keys are the flag names. A flag or variable
//! that is set wins over the file; the file wins over built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

/// Which discovery backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// Real GPUs through NVML.
    Nvml,
    /// A node described by `--simulated-file`.
    Simulated,
}

/// How containers learn their GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceListStrategyKind {
    /// `NVIDIA_VISIBLE_DEVICES` with UUIDs.
    Envvar,
    /// CDI device names in the Allocate response.
    Cdi,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting of the device plugin.
#[derive(Debug, Clone, Args, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    /// Optional YAML file with any of these settings (keys are the flag names).
    #[arg(long, env = "GPUPACK_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Kubernetes node this plugin runs on (downward API `spec.nodeName`).
    #[arg(long, env = "NODE_NAME", global = true)]
    pub node_name: Option<String>,

    /// GPU discovery backend.
    #[arg(
        long,
        env = "GPUPACK_BACKEND",
        value_enum,
        default_value = "nvml",
        global = true
    )]
    pub backend: BackendKind,

    /// NVML library to load.
    #[arg(
        long,
        env = "GPUPACK_NVML_LIBRARY",
        default_value = "libnvidia-ml.so.1",
        global = true
    )]
    pub nvml_library: String,

    /// Simulated node file (with `--backend simulated`).
    #[arg(long, env = "GPUPACK_SIMULATED_FILE", global = true)]
    pub simulated_file: Option<PathBuf>,

    /// Root of sysfs, where GPU NUMA nodes are read.
    #[arg(
        long,
        env = "GPUPACK_SYSFS_ROOT",
        default_value = "/sys",
        global = true
    )]
    pub sysfs_root: PathBuf,

    /// kubelet's device plugin directory (kubelet.sock and plugin sockets).
    #[arg(
        long,
        env = "GPUPACK_DEVICE_PLUGIN_DIR",
        default_value = "/var/lib/kubelet/device-plugins",
        global = true
    )]
    pub device_plugin_dir: PathBuf,

    /// kubelet's PodResources socket.
    #[arg(
        long,
        env = "GPUPACK_POD_RESOURCES_SOCKET",
        default_value = "/var/lib/kubelet/pod-resources/kubelet.sock",
        global = true
    )]
    pub pod_resources_socket: PathBuf,

    /// Slices each GPU offers as `gpupack.io/gpu` devices.
    #[arg(long, env = "GPUPACK_SLICES_PER_GPU", default_value_t = proto::resources::DEFAULT_SLICES_PER_GPU, global = true)]
    pub slices_per_gpu: u32,

    /// Bytes per `gpupack.io/gpu-memory` device.
    #[arg(long, env = "GPUPACK_MEMORY_UNIT_BYTES", default_value_t = proto::resources::DEFAULT_MEMORY_UNIT_BYTES, global = true)]
    pub memory_unit_bytes: u64,

    /// How containers learn their GPUs.
    #[arg(
        long,
        env = "GPUPACK_DEVICE_LIST_STRATEGY",
        value_enum,
        default_value = "envvar",
        global = true
    )]
    pub device_list_strategy: DeviceListStrategyKind,

    /// CDI kind for `--device-list-strategy cdi`.
    #[arg(
        long,
        env = "GPUPACK_CDI_KIND",
        default_value = "nvidia.com/gpu",
        global = true
    )]
    pub cdi_kind: String,

    /// Seconds without a critical event after which a GPU is healthy again.
    #[arg(
        long,
        env = "GPUPACK_HEALTH_RECOVERY_SECS",
        default_value_t = 300,
        global = true
    )]
    pub health_recovery_secs: u64,

    /// Extra XIDs to ignore, comma-separated (13,31,43,45,68,109 always are).
    #[arg(long, env = "GPUPACK_IGNORED_XIDS", default_value = "", global = true)]
    pub ignored_xids: String,

    /// XIDs that always count, even if ignored by default.
    #[arg(long, env = "GPUPACK_CRITICAL_XIDS", default_value = "", global = true)]
    pub critical_xids: String,

    /// Turn NVML health events off.
    #[arg(long, env = "GPUPACK_DISABLE_HEALTH_CHECKS", global = true)]
    #[serde(default)]
    pub disable_health_checks: bool,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "GPUPACK_HTTP_LISTEN",
        default_value = "0.0.0.0:9400",
        global = true
    )]
    pub http_listen: SocketAddr,

    /// Address of the local admin endpoint (fault injection); off when unset.
    #[arg(long, env = "GPUPACK_ADMIN_LISTEN", global = true)]
    pub admin_listen: Option<SocketAddr>,

    /// kubeconfig to use instead of in-cluster or `$KUBECONFIG` discovery.
    #[arg(long, env = "GPUPACK_KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// Don't talk to the Kubernetes API (no inventory, no pod cache).
    #[arg(long, env = "GPUPACK_NO_KUBERNETES", global = true)]
    #[serde(default)]
    pub no_kubernetes: bool,

    /// How long GetPreferredAllocation and Allocate wait for the pod cache
    /// to hold the pod kubelet is admitting before deciding, in ms.
    #[arg(
        long,
        env = "GPUPACK_HANDOFF_WAIT_MS",
        default_value_t = 2000,
        global = true
    )]
    pub handoff_wait_ms: u64,

    /// Seconds between PodResources verifications.
    #[arg(
        long,
        env = "GPUPACK_VERIFY_INTERVAL_SECS",
        default_value_t = 30,
        global = true
    )]
    pub verify_interval_secs: u64,

    /// Log format.
    #[arg(
        long,
        env = "GPUPACK_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "gpupack-device-plugin",
    version,
    about = "gpupack's GPU device plugin for kubelet"
)]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings.
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Serve kubelet and publish the inventory (the default).
    Run,
    /// Discover GPUs once and print the inventory as JSON.
    Inventory,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: {detail}")]
    File {
        /// The file.
        file: String,
        /// What went wrong.
        detail: String,
    },
    /// A setting is invalid.
    #[error("{0}")]
    Invalid(String),
}

impl Cli {
    /// Parses argv and environment, then merges the config file.
    pub fn load_from<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        if let Some(file) = cli.config.config.clone() {
            let sub = matches.subcommand().map(|(_, m)| m);
            cli.config = merge_file(&cli.config, &file, &matches, sub).map_err(|e| {
                clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{e}\n"))
            })?;
        }
        Ok(cli)
    }
}

/// Applies file values to every setting the user did not give on the
/// command line or in the environment.
fn merge_file(
    cfg: &Config,
    file: &Path,
    top: &ArgMatches,
    sub: Option<&ArgMatches>,
) -> Result<Config, ConfigError> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::File {
        file: name.clone(),
        detail: e.to_string(),
    })?;
    let values: serde_json::Map<String, serde_json::Value> = serde_saphyr::from_str(&text)
        .map_err(|e| ConfigError::File {
            file: name.clone(),
            detail: format!(
                "line {}: {}",
                e.location().map(|l| l.line()).unwrap_or(0),
                e.to_string().lines().next().unwrap_or_default()
            ),
        })?;
    let mut current = serde_json::to_value(cfg).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let obj = current
        .as_object_mut()
        .ok_or_else(|| ConfigError::Invalid("settings are not an object".into()))?;
    for (key, value) in values {
        if !obj.contains_key(&key) {
            return Err(ConfigError::File {
                file: name,
                detail: format!("unknown setting {key:?}"),
            });
        }
        let id = key.replace('-', "_");
        let explicit = |m: &ArgMatches| {
            matches!(
                m.try_get_raw(&id)
                    .ok()
                    .flatten()
                    .and_then(|_| m.value_source(&id)),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        if explicit(top) || sub.is_some_and(explicit) {
            continue;
        }
        obj.insert(key, value);
    }
    let mut merged: Config = serde_json::from_value(current).map_err(|e| ConfigError::File {
        file: name,
        detail: e.to_string(),
    })?;
    merged.config = cfg.config.clone();
    Ok(merged)
}

impl Config {
    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.slices_per_gpu == 0 || self.slices_per_gpu > proto::resources::MAX_SLICES_PER_GPU {
            return Err(ConfigError::Invalid(format!(
                "--slices-per-gpu must be 1 to {}, found {}",
                proto::resources::MAX_SLICES_PER_GPU,
                self.slices_per_gpu
            )));
        }
        if !(1 << 26..=1 << 36).contains(&self.memory_unit_bytes) {
            return Err(ConfigError::Invalid(format!(
                "--memory-unit-bytes must be 64 MiB to 64 GiB, found {}",
                self.memory_unit_bytes
            )));
        }
        if self.backend == BackendKind::Simulated && self.simulated_file.is_none() {
            return Err(ConfigError::Invalid(
                "--backend simulated needs --simulated-file (GPUPACK_SIMULATED_FILE)".into(),
            ));
        }
        crate::resource::backend::xid::parse_list(&self.ignored_xids)
            .map_err(|e| ConfigError::Invalid(format!("--ignored-xids: {e}")))?;
        crate::resource::backend::xid::parse_list(&self.critical_xids)
            .map_err(|e| ConfigError::Invalid(format!("--critical-xids: {e}")))?;
        Ok(())
    }

    /// The node name, required to run.
    pub fn node(&self) -> Result<&str, ConfigError> {
        self.node_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ConfigError::Invalid("--node-name (NODE_NAME) is required; set it from the downward API spec.nodeName".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn defaults_and_subcommand_flags() {
        let cli = Cli::load_from([
            "p",
            "inventory",
            "--backend",
            "simulated",
            "--simulated-file",
            "x.yaml",
        ])
        .unwrap();
        assert_eq!(cli.command, Some(Command::Inventory));
        assert_eq!(cli.config.backend, BackendKind::Simulated);
        assert_eq!(cli.config.slices_per_gpu, 4);
        assert_eq!(cli.config.memory_unit_bytes, 1 << 30);
        assert_eq!(cli.config.nvml_library, "libnvidia-ml.so.1");
        cli.config.validate().unwrap();
        let cli = Cli::load_from(["p"]).unwrap();
        assert_eq!(cli.command, None);
    }

    #[test]
    fn file_fills_what_flags_leave_unset() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "slices-per-gpu: 8\nbackend: simulated\nhttp-listen: 127.0.0.1:1234\ncdi-kind: k/x"
        )
        .unwrap();
        let path = f.path().to_str().unwrap().to_string();
        let cli = Cli::load_from(["p", "--config", &path, "--cdi-kind", "flag/wins"]).unwrap();
        assert_eq!(cli.config.slices_per_gpu, 8);
        assert_eq!(cli.config.backend, BackendKind::Simulated);
        assert_eq!(cli.config.http_listen.port(), 1234);
        assert_eq!(cli.config.cdi_kind, "flag/wins");
    }

    #[test]
    fn unknown_file_key_and_bad_values_are_named() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "slices-per-gpus: 8").unwrap();
        let path = f.path().to_str().unwrap().to_string();
        let err = Cli::load_from(["p", "--config", &path])
            .unwrap_err()
            .to_string();
        assert!(err.contains("slices-per-gpus"), "{err}");

        let cli = Cli::load_from(["p", "--slices-per-gpu", "0"]).unwrap();
        assert!(
            cli.config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("--slices-per-gpu")
        );
        let cli = Cli::load_from(["p", "--backend", "simulated"]).unwrap();
        assert!(
            cli.config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("--simulated-file")
        );
        let cli = Cli::load_from(["p", "--ignored-xids", "1,x"]).unwrap();
        assert!(cli.config.validate().is_err());
        assert!(cli.config.node().is_err() || std::env::var("NODE_NAME").is_ok());
    }
}
