//! The deployment manifests under `daemonset/`, rendered the way a user
//! applies them (`kubectl kustomize`) and read into typed Kubernetes objects,
//! so tests can check the invariants that break real deployments.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;

/// The repository's `daemonset/` directory.
pub fn daemonset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemonset")
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
const FOREIGN_KINDS: &[(&str, &str)] = &[("monitoring.coreos.com/v1", "ServiceMonitor")];

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
    values.into_iter().map(parse_object).collect()
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
