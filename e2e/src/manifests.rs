//! The deployment manifests under `daemonset/`, rendered the way a user
//! applies them (`helm template` of the chart, `kubectl kustomize` of the
//! directories rendered from it) and read into typed Kubernetes objects, so
//! tests can check the invariants that break real deployments.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Pod, PodSpec, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

/// The repository's `daemonset/` directory.
pub fn daemonset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemonset")
}

/// The Helm chart, `daemonset/helm/gpupack`.
pub fn chart_dir() -> PathBuf {
    daemonset_dir().join("helm/gpupack")
}

/// The kustomize directories users apply, each rendered from the chart.
pub const KUSTOMIZE_DIRS: &[&str] = &["base", "overlays/simulated", "overlays/metrics"];

/// The namespace the kustomize directories install into.
pub const NAMESPACE: &str = "gpupack-system";

/// A `helm` binary, from `daemonset/helm/install-helm.sh` (which may fetch
/// and verify one into `target/tools/`), found once per process.
pub fn helm() -> Result<PathBuf> {
    static HELM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    HELM.get_or_init(|| {
        let script = daemonset_dir().join("helm/install-helm.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} could not provide helm: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(PathBuf::from(path))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// Whether this run is CI's (`CI` set to anything but `false`/empty), where
/// every check must run.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `helm` for a test: `Ok(None)` (with a note on stderr) where none can be
/// had outside CI, so a clone without npm still passes; an error in CI.
pub fn helm_for_tests() -> Result<Option<PathBuf>> {
    match helm() {
        Ok(path) => Ok(Some(path)),
        Err(e) if in_ci() => Err(e.context("CI=true: the chart checks need helm")),
        Err(e) => {
            eprintln!("skipping the Helm chart checks: {e:#}");
            Ok(None)
        }
    }
}

/// `helm template` of the chart as release `gpupack` in [`NAMESPACE`], with
/// values files and `--set` arguments; the error carries helm's message.
pub fn helm_template(helm: &Path, values: &[PathBuf], set: &[&str]) -> Result<String> {
    let mut cmd = Command::new(helm);
    cmd.args(["template", "gpupack"])
        .arg(chart_dir())
        .args(["--namespace", NAMESPACE]);
    for v in values {
        cmd.arg("--values").arg(v);
    }
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().context("running helm template")?;
    ensure!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8(out.stdout).context("helm output is not UTF-8")
}

/// The values files CI renders the chart with: `ci/*-values.yaml`.
pub fn chart_value_sets() -> Result<Vec<PathBuf>> {
    let dir = chart_dir().join("ci");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    out.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with("-values.yaml"))
    });
    out.sort();
    Ok(out)
}

/// One way of installing gpupack, rendered.
#[derive(Debug, Clone)]
pub struct Render {
    /// What was rendered, e.g. `kustomize base` or `helm ci/cdi-values.yaml`.
    pub source: String,
    pub objects: Vec<Object>,
}

/// Every way of installing gpupack: each kustomize directory, and the chart
/// with each of its CI values files (left out, with a note, where helm cannot
/// be had outside CI).
pub fn all_renders() -> Result<Vec<Render>> {
    let mut out = Vec::new();
    for dir in KUSTOMIZE_DIRS {
        out.push(Render {
            source: format!("kustomize {dir}"),
            objects: render(&daemonset_dir().join(dir))?,
        });
    }
    if let Some(helm) = helm_for_tests()? {
        for values in chart_value_sets()? {
            let name = values
                .strip_prefix(chart_dir())
                .unwrap_or(&values)
                .display()
                .to_string();
            let text = helm_template(&helm, std::slice::from_ref(&values), &[])
                .with_context(|| format!("helm template with {name}"))?;
            out.push(Render {
                source: format!("helm {name}"),
                objects: parse_documents(&text).with_context(|| format!("helm {name}"))?,
            });
        }
    }
    Ok(out)
}

/// One rendered object, typed.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Object {
    Namespace(Namespace),
    CustomResourceDefinition(CustomResourceDefinition),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    ConfigMap(ConfigMap),
    DaemonSet(DaemonSet),
    Deployment(Deployment),
    PodDisruptionBudget(PodDisruptionBudget),
    Service(Service),
    Pod(Pod),
    /// A custom resource of another project (e.g. a Prometheus Operator
    /// ServiceMonitor), kept untyped.
    Other {
        /// `apiVersion`.
        api_version: String,
        /// `kind`.
        kind: String,
        /// The whole object.
        value: serde_json::Value,
    },
}

/// Kinds of other projects' custom resources an overlay may contain.
const FOREIGN_KINDS: &[(&str, &str)] = &[
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("cert-manager.io/v1", "Certificate"),
];

/// Renders a kustomization directory with `kubectl kustomize`.
pub fn render(dir: &Path) -> Result<Vec<Object>> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .context("running kubectl kustomize (is kubectl installed?)")?;
    ensure!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).context("kustomize output is not UTF-8")?;
    parse_documents(&text).with_context(|| format!("rendering {}", dir.display()))
}

/// Parses a multi-document YAML stream into typed objects; an unknown kind or
/// a field the typed struct rejects is an error.
pub fn parse_documents(text: &str) -> Result<Vec<Object>> {
    let values: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).context("parsing YAML documents")?;
    // Helm leaves an empty document where a template renders nothing.
    values
        .into_iter()
        .filter(|v| !v.is_null())
        .map(parse_object)
        .collect()
}

fn parse_object(value: serde_json::Value) -> Result<Object> {
    let api_version = value["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = value["kind"].as_str().unwrap_or_default().to_string();
    let name = value["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let typed = |v: serde_json::Value| -> Result<Object> {
        Ok(match (api_version.as_str(), kind.as_str()) {
            ("v1", "Namespace") => Object::Namespace(serde_json::from_value(v)?),
            ("v1", "ServiceAccount") => Object::ServiceAccount(serde_json::from_value(v)?),
            ("v1", "ConfigMap") => Object::ConfigMap(serde_json::from_value(v)?),
            ("v1", "Service") => Object::Service(serde_json::from_value(v)?),
            ("v1", "Pod") => Object::Pod(serde_json::from_value(v)?),
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                Object::CustomResourceDefinition(serde_json::from_value(v)?)
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                Object::ClusterRole(serde_json::from_value(v)?)
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                Object::ClusterRoleBinding(serde_json::from_value(v)?)
            }
            ("rbac.authorization.k8s.io/v1", "Role") => Object::Role(serde_json::from_value(v)?),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                Object::RoleBinding(serde_json::from_value(v)?)
            }
            ("apps/v1", "DaemonSet") => Object::DaemonSet(serde_json::from_value(v)?),
            ("apps/v1", "Deployment") => Object::Deployment(serde_json::from_value(v)?),
            ("policy/v1", "PodDisruptionBudget") => {
                Object::PodDisruptionBudget(serde_json::from_value(v)?)
            }
            (av, k) if FOREIGN_KINDS.contains(&(av, k)) => Object::Other {
                api_version: av.to_string(),
                kind: k.to_string(),
                value: v,
            },
            (av, k) => bail!("unexpected object {av} {k}"),
        })
    };
    typed(value).with_context(|| format!("{kind} {name:?}"))
}

/// `KubeSchedulerConfiguration` (`kubescheduler.config.k8s.io/v1`), the parts
/// gpupack sets. Unknown fields are rejected so that a typo in the manifest
/// fails here rather than in kube-scheduler's strict decoding.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchedulerConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub leader_election: Option<LeaderElection>,
    #[serde(default)]
    pub profiles: Vec<Profile>,
    #[serde(default)]
    pub extenders: Vec<Extender>,
}

/// `leaderElection`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderElection {
    pub leader_elect: bool,
    #[serde(default)]
    pub resource_lock: Option<String>,
    #[serde(default)]
    pub resource_name: Option<String>,
    #[serde(default)]
    pub resource_namespace: Option<String>,
    #[serde(default)]
    pub lease_duration: Option<String>,
    #[serde(default)]
    pub renew_deadline: Option<String>,
    #[serde(default)]
    pub retry_period: Option<String>,
}

/// `profiles[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    pub scheduler_name: String,
    #[serde(default)]
    pub plugins: Option<serde_json::Value>,
    #[serde(default)]
    pub plugin_config: Option<serde_json::Value>,
}

/// `extenders[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Extender {
    pub url_prefix: String,
    #[serde(default)]
    pub filter_verb: String,
    #[serde(default)]
    pub preempt_verb: String,
    #[serde(default)]
    pub prioritize_verb: String,
    #[serde(default)]
    pub weight: i64,
    #[serde(default)]
    pub bind_verb: String,
    #[serde(default, rename = "enableHTTPS")]
    pub enable_https: bool,
    #[serde(default)]
    pub tls_config: Option<serde_json::Value>,
    #[serde(default)]
    pub http_timeout: Option<String>,
    #[serde(default)]
    pub node_cache_capable: bool,
    #[serde(default)]
    pub managed_resources: Vec<ManagedResource>,
    #[serde(default)]
    pub ignorable: bool,
}

/// `extenders[].managedResources[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagedResource {
    pub name: String,
    #[serde(default)]
    pub ignored_by_scheduler: bool,
}

impl SchedulerConfig {
    /// Parses the configuration file.
    pub fn parse(text: &str) -> Result<SchedulerConfig> {
        serde_saphyr::from_str(text).context("parsing KubeSchedulerConfiguration")
    }

    /// The checks kube-scheduler's validation
    /// (`pkg/scheduler/apis/config/validation`) applies to what gpupack sets.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.api_version == "kubescheduler.config.k8s.io/v1",
            "apiVersion {:?} is not kubescheduler.config.k8s.io/v1",
            self.api_version
        );
        ensure!(
            self.kind == "KubeSchedulerConfiguration",
            "kind {:?}",
            self.kind
        );
        let mut names = HashSet::new();
        for p in &self.profiles {
            ensure!(
                !p.scheduler_name.is_empty(),
                "profiles[].schedulerName is empty"
            );
            ensure!(
                names.insert(p.scheduler_name.as_str()),
                "duplicate profile {}",
                p.scheduler_name
            );
        }
        if let Some(le) = &self.leader_election
            && le.leader_elect
        {
            ensure!(
                le.resource_lock.as_deref().unwrap_or("leases") == "leases",
                "leaderElection.resourceLock must be leases"
            );
            let lease = duration(le.lease_duration.as_deref(), 15.0)?;
            let renew = duration(le.renew_deadline.as_deref(), 10.0)?;
            let retry = duration(le.retry_period.as_deref(), 2.0)?;
            ensure!(lease > renew, "leaseDuration must exceed renewDeadline");
            ensure!(renew > retry, "renewDeadline must exceed retryPeriod");
        }
        let binders = self
            .extenders
            .iter()
            .filter(|e| !e.bind_verb.is_empty())
            .count();
        ensure!(
            binders <= 1,
            "only one extender can implement bind, found {binders}"
        );
        let mut managed = HashSet::new();
        for (i, e) in self.extenders.iter().enumerate() {
            ensure!(
                !e.url_prefix.is_empty(),
                "extenders[{i}].urlPrefix is empty"
            );
            ensure!(
                e.prioritize_verb.is_empty() || e.weight > 0,
                "extenders[{i}].weight must be positive when prioritizeVerb is set"
            );
            if let Some(t) = &e.http_timeout {
                duration(Some(t), 5.0).with_context(|| format!("extenders[{i}].httpTimeout"))?;
            }
            for r in &e.managed_resources {
                ensure!(
                    is_extended_resource_name(&r.name),
                    "extenders[{i}].managedResources: {:?} is not an extended resource name",
                    r.name
                );
                ensure!(
                    managed.insert(r.name.as_str()),
                    "duplicate extender managed resource name {}",
                    r.name
                );
            }
        }
        Ok(())
    }
}

/// A Go duration like `15s`, `1m30s`, `500ms`, in seconds.
pub fn duration(text: Option<&str>, default: f64) -> Result<f64> {
    let Some(text) = text else {
        return Ok(default);
    };
    let mut total = 0.0;
    let mut rest = text;
    ensure!(!rest.is_empty(), "empty duration");
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .with_context(|| format!("duration {text:?} lacks a unit"))?;
        let value: f64 = rest[..digits]
            .parse()
            .with_context(|| format!("duration {text:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => bail!("duration {text:?}: unknown unit {u:?}"),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Kubernetes' `IsExtendedResourceName`: a qualified name with a domain
/// outside `kubernetes.io`, not `requests.`-prefixed, each part valid.
pub fn is_extended_resource_name(name: &str) -> bool {
    let Some((domain, rest)) = name.split_once('/') else {
        return false;
    };
    let label_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
    };
    !domain.ends_with("kubernetes.io")
        && !name.starts_with("requests.")
        && domain.contains('.')
        && domain.len() <= 253
        && label_ok(rest)
}

/// Every rule of a ClusterRole or Role, with the role's name.
pub fn rbac_rules(objects: &[Object]) -> Vec<(String, PolicyRule)> {
    let mut out = Vec::new();
    for o in objects {
        let (name, rules) = match o {
            Object::ClusterRole(r) => (r.metadata.name.clone(), r.rules.clone()),
            Object::Role(r) => (r.metadata.name.clone(), r.rules.clone()),
            _ => continue,
        };
        for rule in rules.unwrap_or_default() {
            out.push((name.clone().unwrap_or_default(), rule));
        }
    }
    out
}

/// Container images of every workload, by `<workload>/<container>`.
pub fn images(objects: &[Object]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for o in objects {
        let (name, spec) = match o {
            Object::DaemonSet(d) => (
                d.metadata.name.clone(),
                d.spec.as_ref().and_then(|s| s.template.spec.clone()),
            ),
            Object::Deployment(d) => (
                d.metadata.name.clone(),
                d.spec.as_ref().and_then(|s| s.template.spec.clone()),
            ),
            _ => continue,
        };
        for c in spec.map(|s| s.containers).unwrap_or_default() {
            out.insert(
                format!("{}/{}", name.clone().unwrap_or_default(), c.name),
                c.image.unwrap_or_default(),
            );
        }
    }
    out
}

/// A workload's pod template: what kubelet would run.
#[derive(Debug, Clone)]
pub struct Workload {
    /// `<Kind>/<name>`.
    pub name: String,
    pub namespace: String,
    pub pod_labels: BTreeMap<String, String>,
    pub pod: PodSpec,
}

/// The DaemonSets' and Deployments' pod templates.
pub fn workloads(objects: &[Object]) -> Vec<Workload> {
    objects
        .iter()
        .filter_map(|o| {
            let (kind, meta, template) = match o {
                Object::DaemonSet(d) => ("DaemonSet", &d.metadata, &d.spec.as_ref()?.template),
                Object::Deployment(d) => ("Deployment", &d.metadata, &d.spec.as_ref()?.template),
                _ => return None,
            };
            Some(Workload {
                name: format!("{kind}/{}", meta.name.as_deref().unwrap_or_default()),
                namespace: meta.namespace.clone().unwrap_or_default(),
                pod_labels: template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default(),
                pod: template.spec.clone()?,
            })
        })
        .collect()
}

/// The workload running the container named `container`, and the container.
pub fn container(objects: &[Object], container: &str) -> Result<(Workload, Container)> {
    workloads(objects)
        .into_iter()
        .find_map(|w| {
            let c = w
                .pod
                .containers
                .iter()
                .find(|c| c.name == container)?
                .clone();
            Some((w, c))
        })
        .with_context(|| format!("no workload runs a container named {container}"))
}

/// Whether gpupack runs its own kube-scheduler (the chart's
/// `second-scheduler` mode) rather than serving the cluster's
/// (`extender-only`).
pub fn runs_own_kube_scheduler(objects: &[Object]) -> bool {
    container(objects, "kube-scheduler").is_ok()
}

/// The `KubeSchedulerConfiguration` shipped in a ConfigMap's `config.yaml`:
/// the gpupack scheduler's own, or in extender-only mode the entry for the
/// cluster's scheduler.
pub fn scheduler_config(objects: &[Object]) -> Result<SchedulerConfig> {
    let texts: Vec<&String> = objects
        .iter()
        .filter_map(|o| match o {
            Object::ConfigMap(cm) => cm.data.as_ref()?.get("config.yaml"),
            _ => None,
        })
        .filter(|t| t.contains("kind: KubeSchedulerConfiguration"))
        .collect();
    match texts[..] {
        [text] => SchedulerConfig::parse(text),
        _ => bail!(
            "expected one ConfigMap with a KubeSchedulerConfiguration in config.yaml, found {}",
            texts.len()
        ),
    }
}

/// Where a file a container reads comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    ConfigMap { name: String, key: String },
    Secret { name: String, key: String },
    HostPath(String),
}

/// The volume behind `path` in `container`: the mount whose path is the
/// longest prefix, and the ConfigMap or Secret key (honouring `items`).
pub fn file_source(pod: &PodSpec, container: &Container, path: &Path) -> Result<FileSource> {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| path.starts_with(&m.mount_path))
        .max_by_key(|m| m.mount_path.len())
        .with_context(|| format!("{}: {} is on no volume", container.name, path.display()))?;
    let relative = path
        .strip_prefix(&mount.mount_path)
        .context("mount prefix")?
        .to_string_lossy()
        .to_string();
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .with_context(|| format!("{}: no volume {}", container.name, mount.name))?;
    let key_for = |items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>| {
        items.map_or(Some(relative.clone()), |items| {
            items
                .iter()
                .find(|i| i.path == relative)
                .map(|i| i.key.clone())
        })
    };
    if let Some(cm) = &volume.config_map {
        let key = key_for(cm.items.as_ref()).with_context(|| {
            format!("ConfigMap volume {} has no item at {relative}", volume.name)
        })?;
        return Ok(FileSource::ConfigMap {
            name: cm.name.clone(),
            key,
        });
    }
    if let Some(secret) = &volume.secret {
        let key = key_for(secret.items.as_ref())
            .with_context(|| format!("Secret volume {} has no item at {relative}", volume.name))?;
        return Ok(FileSource::Secret {
            name: secret.secret_name.clone().unwrap_or_default(),
            key,
        });
    }
    if let Some(host) = &volume.host_path {
        return Ok(FileSource::HostPath(
            Path::new(&host.path).join(&relative).display().to_string(),
        ));
    }
    bail!(
        "{}: volume {} is neither a ConfigMap, a Secret nor a host path",
        container.name,
        volume.name
    )
}

/// The `data` value of a ConfigMap among the objects.
pub fn config_map_data(objects: &[Object], name: &str, key: &str) -> Option<String> {
    objects.iter().find_map(|o| match o {
        Object::ConfigMap(cm) if cm.metadata.name.as_deref() == Some(name) => {
            cm.data.as_ref()?.get(key).cloned()
        }
        _ => None,
    })
}

/// The port number a container's named or numbered port resolves to.
pub fn container_port(c: &Container, port: &IntOrString) -> Result<i32> {
    match port {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
            .with_context(|| format!("{}: no port named {name}", c.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration(Some("15s"), 0.0).unwrap(), 15.0);
        assert_eq!(duration(Some("1m30s"), 0.0).unwrap(), 90.0);
        assert_eq!(duration(Some("500ms"), 0.0).unwrap(), 0.5);
        assert_eq!(duration(None, 5.0).unwrap(), 5.0);
        assert!(duration(Some("15"), 0.0).is_err());
        assert!(duration(Some("15x"), 0.0).is_err());
    }

    #[test]
    fn extended_resource_names() {
        assert!(is_extended_resource_name("gpupack.io/gpu"));
        assert!(is_extended_resource_name("gpupack.io/mig-1g.10gb"));
        assert!(!is_extended_resource_name("gpu"));
        assert!(!is_extended_resource_name("kubernetes.io/gpu"));
        assert!(!is_extended_resource_name("node.kubernetes.io/gpu"));
        assert!(!is_extended_resource_name("gpupack.io/"));
        assert!(!is_extended_resource_name("gpupack.io/-gpu"));
    }

    #[test]
    fn scheduler_config_rules() {
        let base = r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
extenders:
- urlPrefix: http://127.0.0.1:8888/x
  prioritizeVerb: prioritize
  weight: 1
  bindVerb: bind
  managedResources:
  - name: gpupack.io/gpu
"#;
        SchedulerConfig::parse(base).unwrap().validate().unwrap();
        let zero_weight = base.replace("weight: 1", "weight: 0");
        assert!(
            SchedulerConfig::parse(&zero_weight)
                .unwrap()
                .validate()
                .is_err()
        );
        let two_binders = format!("{base}- urlPrefix: http://b\n  bindVerb: bind\n");
        assert!(
            SchedulerConfig::parse(&two_binders)
                .unwrap()
                .validate()
                .is_err()
        );
        let dup =
            format!("{base}- urlPrefix: http://b\n  managedResources:\n  - name: gpupack.io/gpu\n");
        assert!(SchedulerConfig::parse(&dup).unwrap().validate().is_err());
        let typo = base.replace("bindVerb", "bindverb");
        assert!(SchedulerConfig::parse(&typo).is_err());
    }
}
