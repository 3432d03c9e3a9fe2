//! Checks of the deployment manifests under `daemonset/`: every overlay is
//! rendered with `kubectl kustomize`, read into typed Kubernetes objects, and
//! held to the invariants that break real deployments.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use e2e::manifests::{self, Object, SchedulerConfig, daemonset_dir};
use kube::CustomResourceExt;

const OVERLAYS: &[&str] = &["base", "overlays/simulated", "overlays/metrics"];

fn rendered(overlay: &str) -> Vec<Object> {
    manifests::render(&daemonset_dir().join(overlay)).unwrap()
}

fn scheduler_config(objects: &[Object]) -> SchedulerConfig {
    let cm = objects
        .iter()
        .find_map(|o| match o {
            Object::ConfigMap(cm)
                if cm
                    .metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("gpupack-scheduler-config")) =>
            {
                Some(cm.clone())
            }
            _ => None,
        })
        .expect("the scheduler ConfigMap");
    let text = cm.data.unwrap()["config.yaml"].clone();
    SchedulerConfig::parse(&text).unwrap()
}

#[test]
fn every_overlay_renders_into_typed_objects() {
    for overlay in OVERLAYS {
        let objects = rendered(overlay);
        assert!(
            objects.iter().any(|o| matches!(o, Object::DaemonSet(_))),
            "{overlay}: no DaemonSet"
        );
        assert!(
            objects.iter().any(|o| matches!(o, Object::Deployment(_))),
            "{overlay}: no Deployment"
        );
    }
}

#[test]
fn crd_matches_the_proto_definition() {
    let objects = rendered("base");
    let crd = objects
        .iter()
        .find_map(|o| match o {
            Object::CustomResourceDefinition(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    let expected = proto::inventory::GpuNodeInventory::crd();
    assert_eq!(
        crd.spec, expected.spec,
        "daemonset/base/crd/gpunodeinventories.yaml is stale: regenerate it with \
         `cargo run -q -p proto --example print-crd > daemonset/base/crd/gpunodeinventories.yaml`"
    );
}

#[test]
fn scheduler_configuration_passes_kube_scheduler_validation() {
    for overlay in OVERLAYS {
        let config = scheduler_config(&rendered(overlay));
        config.validate().unwrap();
        assert_eq!(config.extenders.len(), 1, "{overlay}");
        let ext = &config.extenders[0];
        assert!(!ext.bind_verb.is_empty(), "the gpupack extender binds");
        assert!(!ext.filter_verb.is_empty() && !ext.prioritize_verb.is_empty());
        assert!(ext.weight > 0);
        assert!(ext.node_cache_capable);
        assert!(
            !ext.ignorable,
            "GPU pods cannot be placed without the extender"
        );
        let timeout = manifests::duration(ext.http_timeout.as_deref(), 5.0).unwrap();
        assert!((5.0..=30.0).contains(&timeout), "httpTimeout {timeout}s");
        assert_eq!(
            config.profiles[0].scheduler_name, "gpupack-scheduler",
            "the profile pods select with schedulerName"
        );
        assert!(config.leader_election.as_ref().unwrap().leader_elect);
    }
}

#[test]
fn managed_resources_are_gpupack_resources() {
    let config = scheduler_config(&rendered("base"));
    let names: BTreeSet<&str> = config.extenders[0]
        .managed_resources
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert!(names.contains(proto::resources::GPU));
    assert!(names.contains(proto::resources::GPU_MEMORY));
    for name in &names {
        assert!(
            proto::resources::Resource::parse(name).is_some(),
            "{name} is not a gpupack resource name"
        );
    }
}

#[test]
fn rbac_has_no_wildcards() {
    for overlay in OVERLAYS {
        for (role, rule) in manifests::rbac_rules(&rendered(overlay)) {
            let all = rule
                .verbs
                .iter()
                .chain(rule.resources.iter().flatten())
                .chain(rule.api_groups.iter().flatten())
                .chain(rule.resource_names.iter().flatten());
            for item in all {
                assert!(!item.contains('*'), "{overlay}: role {role} has a wildcard");
            }
            assert!(
                rule.non_resource_urls.is_none(),
                "{overlay}: role {role} grants non-resource URLs"
            );
        }
    }
}

#[test]
fn images_carry_explicit_tags() {
    for overlay in OVERLAYS {
        for (container, image) in manifests::images(&rendered(overlay)) {
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
            assert!(
                !tag.is_empty() && !tag.contains('/') && tag != "latest",
                "{overlay}: {container} uses {image:?} without an explicit tag"
            );
        }
    }
}

#[test]
fn device_plugin_daemonset_mounts_kubelet_directories() {
    for overlay in OVERLAYS {
        let objects = rendered(overlay);
        let ds = objects
            .iter()
            .find_map(|o| match o {
                Object::DaemonSet(d) => Some(d.clone()),
                _ => None,
            })
            .unwrap();
        let pod = ds.spec.unwrap().template.spec.unwrap();
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("system-node-critical")
        );
        let host_paths: BTreeSet<String> = pod
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| v.host_path.map(|h| h.path))
            .collect();
        let device_plugin_dir =
            proto::deviceplugin::constants::DEVICE_PLUGIN_PATH.trim_end_matches('/');
        assert!(
            host_paths.contains(device_plugin_dir),
            "{overlay}: {host_paths:?}"
        );
        let pod_resources_dir = std::path::Path::new(proto::podresources::constants::SOCKET)
            .parent()
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            host_paths.contains(pod_resources_dir),
            "{overlay}: {host_paths:?}"
        );
        let c = &pod.containers[0];
        let mounts: BTreeSet<&str> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(mounts.contains(device_plugin_dir));
        let env: Vec<_> = c.env.iter().flatten().collect();
        let node_name = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
        assert_eq!(
            node_name
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "spec.nodeName"
        );
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_ne!(sc.privileged, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
    }
}

#[test]
fn scheduler_runs_two_replicas_with_a_disruption_budget() {
    let objects = rendered("base");
    let deploy = objects
        .iter()
        .find_map(|o| match o {
            Object::Deployment(d) => Some(d.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(deploy.spec.as_ref().unwrap().replicas, Some(2));
    assert!(
        objects
            .iter()
            .any(|o| matches!(o, Object::PodDisruptionBudget(_)))
    );
}

#[test]
fn examples_parse_and_use_gpupack() {
    let dir = daemonset_dir().join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let objects = manifests::parse_documents(&text).unwrap();
        for o in objects {
            let (pod_meta, pod) = match o {
                Object::Deployment(d) => {
                    let t = d.spec.unwrap().template;
                    (t.metadata.unwrap_or_default(), t.spec.unwrap())
                }
                Object::Pod(p) => (p.metadata, p.spec.unwrap()),
                other => panic!("{}: unexpected {other:?}", path.display()),
            };
            assert_eq!(pod.scheduler_name.as_deref(), Some("gpupack-scheduler"));
            let asks_for_gpus = pod.containers.iter().any(|c| {
                c.resources
                    .as_ref()
                    .and_then(|r| r.limits.as_ref())
                    .is_some_and(|l| l.contains_key(proto::resources::GPU))
            });
            assert!(asks_for_gpus, "{}: no gpupack.io/gpu limit", path.display());
            let annotations = pod_meta.annotations.unwrap_or_default();
            proto::annotations::ModelAnnotations::from_annotations(&annotations).unwrap();
            n += 1;
        }
    }
    assert!(n >= 2);
}

/// The container of a workload, by workload kind and container name.
fn container(objects: &[Object], name: &str) -> k8s_openapi::api::core::v1::Container {
    objects
        .iter()
        .flat_map(|o| {
            let spec = match o {
                Object::DaemonSet(d) => d.spec.as_ref().and_then(|s| s.template.spec.clone()),
                Object::Deployment(d) => d.spec.as_ref().and_then(|s| s.template.spec.clone()),
                _ => None,
            };
            spec.map(|s| s.containers).unwrap_or_default()
        })
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The port numbers a container's probes use, resolving named ports.
fn probe_ports(c: &k8s_openapi::api::core::v1::Container) -> Vec<i32> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    [&c.liveness_probe, &c.readiness_probe, &c.startup_probe]
        .into_iter()
        .flatten()
        .map(|p| {
            let port = &p.http_get.as_ref().expect("HTTP probe").port;
            match port {
                IntOrString::Int(n) => *n,
                IntOrString::String(name) => {
                    c.ports
                        .iter()
                        .flatten()
                        .find(|p| p.name.as_deref() == Some(name))
                        .unwrap_or_else(|| panic!("{}: no port named {name}", c.name))
                        .container_port
                }
            }
        })
        .collect()
}

#[test]
fn flags_parse_with_the_binaries_and_ports_line_up() {
    for overlay in OVERLAYS {
        let objects = rendered(overlay);

        // The device plugin: its own flag parser accepts the DaemonSet's
        // arguments, and the probes hit the port it serves HTTP on.
        let c = container(&objects, "device-plugin");
        let argv = std::iter::once("gpupack-device-plugin".to_string())
            .chain(c.args.clone().unwrap_or_default());
        let cli = device_plugin::config::Cli::load_from(argv)
            .unwrap_or_else(|e| panic!("{overlay}: device plugin flags: {e}"));
        let port = i32::from(cli.config.http_listen.port());
        let probes = probe_ports(&c);
        assert!(!probes.is_empty());
        assert!(
            probes.iter().all(|p| *p == port),
            "{overlay}: probes {probes:?}, serves {port}"
        );
        if cli.config.backend == device_plugin::config::BackendKind::Simulated {
            let file = cli.config.simulated_file.clone().unwrap();
            let mounted = c
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| file.starts_with(&m.mount_path));
            assert!(
                mounted,
                "{overlay}: {} is not on a mounted volume",
                file.display()
            );
            let text =
                std::fs::read_to_string(daemonset_dir().join(overlay).join("node.yaml")).unwrap();
            let ctx = device_plugin::resource::backend::DiscoveryContext {
                node_name: "kind-worker".into(),
                slices_per_gpu: cli.config.slices_per_gpu,
                memory_unit_bytes: cli.config.memory_unit_bytes,
            };
            let inv = device_plugin::resource::backend::simulated::parse("node.yaml", &text, &ctx)
                .unwrap();
            inv.validate().unwrap();
        }

        // The extender: its flag parser accepts the sidecar's arguments, the
        // scheduler calls exactly where it serves the verbs, and the probes
        // hit where it serves health.
        let c = container(&objects, "extender");
        let argv = std::iter::once("gpupack-scheduler-ext".to_string())
            .chain(c.args.clone().unwrap_or_default());
        let args = <scheduler_ext::Args as clap::Parser>::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{overlay}: extender flags: {e}"));
        let config = scheduler_ext::Config::resolve(args).unwrap();
        let scheduler = scheduler_config(&objects);
        let ext = &scheduler.extenders[0];
        let scheme = if ext.enable_https { "https" } else { "http" };
        assert!(
            config.listen.ip().is_loopback(),
            "{overlay}: the verbs must stay inside the pod"
        );
        assert_eq!(
            ext.url_prefix.trim_end_matches('/'),
            format!("{scheme}://{}{}", config.listen, config.url_prefix),
            "{overlay}: urlPrefix does not reach the sidecar"
        );
        assert_eq!(
            ext.enable_https,
            config.tls.is_some(),
            "{overlay}: enableHTTPS and the sidecar's TLS disagree"
        );
        let ops = config
            .metrics_listen
            .expect("health and metrics on their own port");
        let probes = probe_ports(&c);
        assert!(!probes.is_empty());
        assert!(
            probes.iter().all(|p| *p == i32::from(ops.port())),
            "{overlay}: probes {probes:?}, health served on {ops}"
        );
        let timeout_ms = manifests::duration(ext.http_timeout.as_deref(), 5.0).unwrap() * 1000.0;
        assert!(
            (config.request_timeout.as_millis() as f64) < timeout_ms,
            "{overlay}: the extender's request timeout must end before kube-scheduler's httpTimeout"
        );
    }
}
