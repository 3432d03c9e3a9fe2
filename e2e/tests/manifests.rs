//! Checks of the deployment manifests under `daemonset/`: every overlay is
//! rendered with `kubectl kustomize`, read into typed Kubernetes objects, and
//! held to the invariants that break real deployments.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use e2e::manifests::{self, FileSource, Object, Render, daemonset_dir};
use kube::CustomResourceExt;

/// Every kustomize directory and every chart render of `ci/*-values.yaml`,
/// rendered once for all the checks below.
fn renders() -> &'static [Render] {
    static RENDERS: OnceLock<Vec<Render>> = OnceLock::new();
    RENDERS.get_or_init(|| match manifests::all_renders() {
        Ok(r) => r,
        Err(e) => panic!("rendering the manifests: {e:#}"),
    })
}

#[test]
fn every_render_has_typed_workloads() {
    for Render { source, objects } in renders() {
        assert!(
            objects.iter().any(|o| matches!(o, Object::DaemonSet(_))),
            "{source}: no DaemonSet"
        );
        assert!(
            objects.iter().any(|o| matches!(o, Object::Deployment(_))),
            "{source}: no Deployment"
        );
    }
}

#[test]
fn crd_matches_the_proto_definition() {
    let expected = proto::inventory::GpuNodeInventory::crd();
    for Render { source, objects } in renders() {
        let crds: Vec<_> = objects
            .iter()
            .filter_map(|o| match o {
                Object::CustomResourceDefinition(c) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(crds.len(), 1, "{source}: one CRD");
        assert_eq!(
            crds[0].spec, expected.spec,
            "{source}: the CRD is stale: regenerate it with `cargo run -q -p proto --example \
             print-crd > daemonset/helm/gpupack/files/gpunodeinventories.yaml`, then \
             daemonset/helm/render-kustomize.sh"
        );
    }
}

#[test]
fn scheduler_configuration_passes_kube_scheduler_validation() {
    for Render { source, objects } in renders() {
        let overlay = source;
        let config = manifests::scheduler_config(objects).unwrap();
        config.validate().unwrap();
        assert_eq!(config.extenders.len(), 1, "{overlay}");
        let ext = &config.extenders[0];
        assert!(!ext.bind_verb.is_empty(), "the gpupack extender binds");
        assert_eq!(
            ext.preempt_verb, "preempt",
            "{overlay}: kube-scheduler's preemption cannot see per-GPU memory without the extender"
        );
        assert!(!ext.filter_verb.is_empty() && !ext.prioritize_verb.is_empty());
        assert!(ext.weight > 0);
        assert!(ext.node_cache_capable);
        assert!(
            !ext.ignorable,
            "GPU pods cannot be placed without the extender"
        );
        let timeout = manifests::duration(ext.http_timeout.as_deref(), 5.0).unwrap();
        assert!((5.0..=30.0).contains(&timeout), "httpTimeout {timeout}s");
        if manifests::runs_own_kube_scheduler(objects) {
            assert_eq!(
                config.profiles[0].scheduler_name, "gpupack-scheduler",
                "{overlay}: the profile pods select with schedulerName"
            );
            let election = config.leader_election.as_ref().unwrap();
            assert!(election.leader_elect, "{overlay}: leader election");
            let lease = election.resource_name.as_deref().unwrap();
            let lease_namespace = election.resource_namespace.as_deref().unwrap();
            let (scheduler, _) = manifests::container(objects, "kube-scheduler").unwrap();
            let grants = e2e::rbac::grants_of(
                objects,
                &scheduler.namespace,
                scheduler.pod.service_account_name.as_deref().unwrap(),
            );
            for verb in ["get", "update"] {
                let call = e2e::rbac::Call {
                    verb: verb.into(),
                    group: "coordination.k8s.io".into(),
                    resource: "leases".into(),
                    subresource: None,
                    namespace: Some(lease_namespace.into()),
                };
                let named = grants.iter().any(|g| {
                    (g.namespace.is_none() || g.namespace == call.namespace)
                        && e2e::rbac::allowed(std::slice::from_ref(&g.rule), &call)
                        && g.rule
                            .resource_names
                            .as_ref()
                            .is_none_or(|names| names.iter().any(|n| n == lease))
                });
                assert!(
                    named,
                    "{overlay}: kube-scheduler cannot {call} named {lease}"
                );
            }
        } else {
            assert!(
                config.profiles.is_empty() && config.leader_election.is_none(),
                "{overlay}: the entry for the cluster's scheduler sets only extenders"
            );
        }
    }
}

#[test]
fn managed_resources_are_gpupack_resources() {
    for Render { source, objects } in renders() {
        let config = manifests::scheduler_config(objects).unwrap();
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
                "{source}: {name} is not a gpupack resource name"
            );
        }
    }
}

#[test]
fn rbac_has_no_wildcards() {
    for Render {
        source: overlay,
        objects,
    } in renders()
    {
        for (role, rule) in manifests::rbac_rules(objects) {
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
    for Render {
        source: overlay,
        objects,
    } in renders()
    {
        for (container, image) in manifests::images(objects) {
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
    for Render {
        source: overlay,
        objects,
    } in renders()
    {
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
    for Render { source, objects } in renders() {
        let (scheduler, _) = manifests::container(objects, "extender").unwrap();
        let deploy = objects
            .iter()
            .find_map(|o| match o {
                Object::Deployment(d) => Some(d.clone()),
                _ => None,
            })
            .unwrap();
        let replicas = deploy.spec.as_ref().unwrap().replicas.unwrap_or(1);
        assert!(replicas >= 2, "{source}: {replicas} scheduler replicas");
        let selects_scheduler = |pdb: &k8s_openapi::api::policy::v1::PodDisruptionBudget| {
            let wanted = pdb
                .spec
                .as_ref()?
                .selector
                .as_ref()?
                .match_labels
                .as_ref()?;
            Some(
                wanted
                    .iter()
                    .all(|(k, v)| scheduler.pod_labels.get(k) == Some(v)),
            )
        };
        let budgets: Vec<_> = objects
            .iter()
            .filter_map(|o| match o {
                Object::PodDisruptionBudget(pdb) => Some(pdb),
                _ => None,
            })
            .collect();
        for pdb in &budgets {
            assert_eq!(
                selects_scheduler(pdb),
                Some(true),
                "{source}: the PodDisruptionBudget selects the scheduler pods"
            );
        }
        // The chart can turn the budget off; what kustomize users get has one.
        if source.starts_with("kustomize") {
            assert_eq!(budgets.len(), 1, "{source}: a PodDisruptionBudget");
        }
    }
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

/// The port numbers a container's probes use, resolving named ports.
fn probe_ports(c: &k8s_openapi::api::core::v1::Container) -> Vec<i32> {
    [&c.liveness_probe, &c.readiness_probe, &c.startup_probe]
        .into_iter()
        .flatten()
        .map(|p| {
            let port = &p.http_get.as_ref().expect("HTTP probe").port;
            manifests::container_port(c, port).unwrap()
        })
        .collect()
}

#[test]
fn flags_parse_with_the_binaries_and_ports_line_up() {
    for Render {
        source: overlay,
        objects,
    } in renders()
    {
        // The device plugin: its own flag parser and validation accept the
        // DaemonSet's arguments, and the probes hit the port it serves HTTP on.
        let (plugin, c) = manifests::container(objects, "device-plugin").unwrap();
        let argv = std::iter::once("gpupack-device-plugin".to_string())
            .chain(c.args.clone().unwrap_or_default());
        let cli = device_plugin::config::Cli::load_from(argv)
            .unwrap_or_else(|e| panic!("{overlay}: device plugin flags: {e}"));
        cli.config
            .validate()
            .unwrap_or_else(|e| panic!("{overlay}: device plugin settings: {e}"));
        let port = i32::from(cli.config.http_listen.port());
        let probes = probe_ports(&c);
        assert!(!probes.is_empty());
        assert!(
            probes.iter().all(|p| *p == port),
            "{overlay}: probes {probes:?}, serves {port}"
        );
        if cli.config.backend == device_plugin::config::BackendKind::Simulated {
            // The node file is mounted from a ConfigMap that ships with it,
            // and the simulated backend accepts it.
            let file = cli.config.simulated_file.clone().unwrap();
            let source = manifests::file_source(&plugin.pod, &c, &file)
                .unwrap_or_else(|e| panic!("{overlay}: {e:#}"));
            let FileSource::ConfigMap { name, key } = source else {
                panic!("{overlay}: {} is not from a ConfigMap", file.display());
            };
            let text = manifests::config_map_data(objects, &name, &key)
                .unwrap_or_else(|| panic!("{overlay}: no ConfigMap {name} with {key}"));
            let ctx = device_plugin::resource::backend::DiscoveryContext {
                node_name: "kind-worker".into(),
                slices_per_gpu: cli.config.slices_per_gpu,
                memory_unit_bytes: cli.config.memory_unit_bytes,
            };
            let inv = device_plugin::resource::backend::simulated::parse(&key, &text, &ctx)
                .unwrap_or_else(|e| panic!("{overlay}: simulated node file: {e}"));
            inv.validate().unwrap();
        }

        // The extender: its flag parser accepts the container's arguments,
        // the scheduler calls exactly where it serves the verbs, and the
        // probes hit where it serves health.
        let (extender, c) = manifests::container(objects, "extender").unwrap();
        let argv = std::iter::once("gpupack-scheduler-ext".to_string())
            .chain(c.args.clone().unwrap_or_default());
        let mut args = <scheduler_ext::Args as clap::Parser>::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{overlay}: extender flags: {e}"));
        // The model cache is a writable volume (the root filesystem is
        // read-only); here it goes to a scratch directory.
        let scratch = tempfile::tempdir().unwrap();
        if let Some(dir) = args.model_cache_dir.take() {
            let mounted = c
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| dir.starts_with(&m.mount_path) && m.read_only != Some(true));
            assert!(
                mounted,
                "{overlay}: --model-cache-dir {} is on no writable volume",
                dir.display()
            );
            args.model_cache_dir = Some(scratch.path().join("models"));
        }
        let config = scheduler_ext::Config::resolve(args)
            .unwrap_or_else(|e| panic!("{overlay}: extender settings: {e}"));
        let scheduler = manifests::scheduler_config(objects).unwrap();
        let ext = &scheduler.extenders[0];
        let scheme = if ext.enable_https { "https" } else { "http" };
        assert_eq!(
            ext.enable_https,
            config.tls.is_some(),
            "{overlay}: enableHTTPS and the extender's TLS disagree"
        );
        if manifests::runs_own_kube_scheduler(objects) {
            assert!(
                config.listen.ip().is_loopback(),
                "{overlay}: the verbs must stay inside the pod"
            );
            assert_eq!(
                ext.url_prefix.trim_end_matches('/'),
                format!("{scheme}://{}{}", config.listen, config.url_prefix),
                "{overlay}: urlPrefix does not reach the sidecar"
            );
        } else {
            assert_reaches_through_a_service(overlay, objects, ext, &extender, &c, &config);
        }
        if let Some((cert, key)) = &config.tls {
            for file in [cert, key].into_iter().chain(&config.tls_client_ca) {
                let source = manifests::file_source(&extender.pod, &c, file)
                    .unwrap_or_else(|e| panic!("{overlay}: {e:#}"));
                assert!(
                    matches!(source, FileSource::Secret { .. }),
                    "{overlay}: {} comes from {source:?}, not a Secret",
                    file.display()
                );
            }
        }
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

/// extender-only: `urlPrefix` names a Service in the release's namespace
/// whose port leads to the extender's listening port, the TLS server name is
/// that host, and a cert-manager Certificate (if any) covers it and writes
/// the Secret the extender mounts.
fn assert_reaches_through_a_service(
    overlay: &str,
    objects: &[Object],
    ext: &manifests::Extender,
    extender: &manifests::Workload,
    c: &k8s_openapi::api::core::v1::Container,
    config: &scheduler_ext::Config,
) {
    let scheme = if ext.enable_https { "https" } else { "http" };
    let rest = ext
        .url_prefix
        .strip_prefix(&format!("{scheme}://"))
        .unwrap_or_else(|| panic!("{overlay}: urlPrefix {} is not {scheme}", ext.url_prefix));
    let (authority, path) = rest.split_once('/').unwrap();
    assert_eq!(
        format!("/{}", path.trim_end_matches('/')),
        config.url_prefix
    );
    let (host, port) = authority.rsplit_once(':').unwrap();
    let port: i32 = port.parse().unwrap();
    let service_name = host
        .strip_suffix(&format!(".{}.svc", extender.namespace))
        .unwrap_or_else(|| {
            panic!(
                "{overlay}: {host} is not a Service of {}",
                extender.namespace
            )
        });
    let service = objects
        .iter()
        .find_map(|o| match o {
            Object::Service(s) if s.metadata.name.as_deref() == Some(service_name) => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{overlay}: no Service {service_name}"));
    let spec = service.spec.as_ref().unwrap();
    for (k, v) in spec.selector.iter().flatten() {
        assert_eq!(
            extender.pod_labels.get(k),
            Some(v),
            "{overlay}: Service {service_name} does not select the extender pods"
        );
    }
    let service_port = spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.port == port)
        .unwrap_or_else(|| panic!("{overlay}: Service {service_name} has no port {port}"));
    let target = service_port
        .target_port
        .clone()
        .unwrap_or(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port));
    assert_eq!(
        manifests::container_port(c, &target).unwrap(),
        i32::from(config.listen.port()),
        "{overlay}: Service {service_name} does not lead to --listen"
    );
    assert!(
        config.listen.ip().is_unspecified(),
        "{overlay}: --listen {}",
        config.listen
    );
    if !ext.enable_https {
        return;
    }
    let server_name = ext
        .tls_config
        .as_ref()
        .and_then(|t| t["serverName"].as_str());
    assert_eq!(server_name, Some(host), "{overlay}: tlsConfig.serverName");
    let certificates = objects.iter().filter_map(|o| match o {
        Object::Other { kind, value, .. } if kind == "Certificate" => Some(value),
        _ => None,
    });
    let (cert_file, _) = config.tls.as_ref().unwrap();
    let FileSource::Secret { name: secret, .. } =
        manifests::file_source(&extender.pod, c, cert_file).unwrap()
    else {
        panic!("{overlay}: the certificate is not from a Secret");
    };
    for cert in certificates {
        assert_eq!(
            cert["spec"]["secretName"].as_str(),
            Some(secret.as_str()),
            "{overlay}: the Certificate writes another Secret than the extender mounts"
        );
        let names: Vec<&str> = cert["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n.as_str())
            .collect();
        assert!(
            names.contains(&host),
            "{overlay}: Certificate lacks {host}: {names:?}"
        );
    }
}

#[test]
fn kustomize_directories_are_rendered_from_the_chart() {
    if manifests::helm_for_tests().unwrap().is_none() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let script = daemonset_dir().join("helm/render-kustomize.sh");
    let status = std::process::Command::new("bash")
        .arg(&script)
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success(), "{} failed", script.display());
    for dir in manifests::KUSTOMIZE_DIRS {
        let committed = std::fs::read_to_string(daemonset_dir().join(dir).join("gpupack.yaml"))
            .unwrap_or_default();
        let fresh = std::fs::read_to_string(out.path().join(dir).join("gpupack.yaml")).unwrap();
        assert!(
            committed == fresh,
            "daemonset/{dir}/gpupack.yaml differs from the chart's render: run \
             daemonset/helm/render-kustomize.sh and commit the result"
        );
    }
}

/// The Hub settings reach the extender: a mirror as HF_ENDPOINT, the token
/// from its Secret (never as a literal value), offline mode, the timeout.
#[test]
fn hub_settings_reach_the_extender_with_the_token_from_its_secret() {
    let Some(helm) = manifests::helm_for_tests().unwrap() else {
        return;
    };
    let text = manifests::helm_template(
        &helm,
        &[],
        &[
            "scheduler.extender.huggingFace.endpoint=https://hf-mirror.internal",
            "scheduler.extender.huggingFace.tokenSecret.name=hf-token",
            "scheduler.extender.huggingFace.offline=true",
            "scheduler.extender.huggingFace.timeoutMs=2500",
        ],
    )
    .unwrap();
    let objects = manifests::parse_documents(&text).unwrap();
    let (_, c) = manifests::container(&objects, "extender").unwrap();
    let env: BTreeMap<String, k8s_openapi::api::core::v1::EnvVar> = c
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.clone()))
        .collect();
    assert_eq!(
        env["HF_ENDPOINT"].value.as_deref(),
        Some("https://hf-mirror.internal")
    );
    let token = &env["HF_TOKEN"];
    assert_eq!(token.value, None);
    let key = token
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .unwrap();
    assert_eq!((key.name.as_str(), key.key.as_str()), ("hf-token", "token"));
    assert_eq!(env["HF_HUB_OFFLINE"].value.as_deref(), Some("1"));
    let args = c.args.unwrap_or_default();
    assert!(
        args.contains(&"--hub-timeout-ms=2500".to_string()),
        "{args:?}"
    );
    // By default: the public Hub, no token, online.
    let (_, c) = manifests::container(&renders()[0].objects, "extender").unwrap();
    let names: Vec<String> = c.env.iter().flatten().map(|e| e.name.clone()).collect();
    assert!(!names.iter().any(|n| n.starts_with("HF_")), "{names:?}");
}

#[test]
fn bad_values_fail_naming_the_value() {
    let Some(helm) = manifests::helm_for_tests().unwrap() else {
        return;
    };
    let cases: &[(&[&str], &str)] = &[
        (&["devicePlugin.slicesPerGpuu=8"], "slicesPerGpuu"),
        (
            &["devicePlugin.slicesPerGpu=-1"],
            "/devicePlugin/slicesPerGpu",
        ),
        (
            &["devicePlugin.slicesPerGpu=65"],
            "/devicePlugin/slicesPerGpu",
        ),
        (
            &["devicePlugin.slicesPerGpu=four"],
            "/devicePlugin/slicesPerGpu",
        ),
        (
            &["devicePlugin.memoryUnitBytes=1024"],
            "/devicePlugin/memoryUnitBytes",
        ),
        (&["devicePlugin.backend=cuda"], "/devicePlugin/backend"),
        (
            &["devicePlugin.deviceListStrategy=volume-mounts"],
            "/devicePlugin/deviceListStrategy",
        ),
        (&["scheduler.mode=default"], "/scheduler/mode"),
        (&["scheduler.replicas=two"], "/scheduler/replicas"),
        (
            &["scheduler.extender.weight=0"],
            "/scheduler/extender/weight",
        ),
        (&["logFormat=xml"], "/logFormat"),
        (
            &["scheduler.extender.huggingFace.endpoint=hf-mirror"],
            "/scheduler/extender/huggingFace/endpoint",
        ),
        (
            &["scheduler.extender.huggingFace.tokenSecret.name=HF_Token"],
            "/scheduler/extender/huggingFace/tokenSecret/name",
        ),
        (
            &["devicePlugin.backend=simulated"],
            "devicePlugin.simulated.nodeFile",
        ),
        (
            &["scheduler.extender.requestTimeoutMs=20000"],
            "scheduler.extender.requestTimeoutMs",
        ),
        (
            &["scheduler.extender.tls.enabled=true"],
            "scheduler.mode=extender-only",
        ),
        (
            &[
                "scheduler.mode=extender-only",
                "scheduler.extender.tls.enabled=true",
            ],
            "scheduler.extender.tls.secretName",
        ),
        (
            &[
                "scheduler.mode=extender-only",
                "scheduler.extender.tls.enabled=true",
                "scheduler.extender.tls.certManager.enabled=true",
            ],
            "scheduler.extender.tls.certManager.issuerRef.name",
        ),
        (
            &["scheduler.extender.tls.clientCA.enabled=true"],
            "scheduler.extender.tls.clientCA.enabled",
        ),
    ];
    for (set, named) in cases {
        match manifests::helm_template(&helm, &[], set) {
            Ok(_) => panic!("helm template --set {set:?} succeeded"),
            Err(e) => {
                let message = format!("{e:#}");
                assert!(
                    message.contains(named),
                    "--set {set:?}: the error does not name {named}: {message}"
                );
            }
        }
    }
}

/// The values table of the chart's README: one row per leaf of
/// values.schema.json, with the default from values.yaml.
fn values_table() -> String {
    fn walk(
        path: &str,
        schema: &serde_json::Value,
        defaults: &serde_json::Value,
        rows: &mut Vec<String>,
    ) {
        if schema["type"] == "object"
            && let Some(props) = schema["properties"].as_object()
        {
            for (key, sub) in props {
                let sub_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                walk(&sub_path, sub, &defaults[key], rows);
            }
            return;
        }
        let default = serde_json::to_string(defaults).unwrap();
        let default = if default.len() > 60 {
            "see values.yaml".to_string()
        } else {
            format!("`{}`", default.replace('|', "\\|"))
        };
        let kind = match schema["enum"].as_array() {
            Some(options) => options
                .iter()
                .map(|o| o.as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" \\| "),
            None => schema["type"].as_str().unwrap_or("any").to_string(),
        };
        let description = schema["description"]
            .as_str()
            .unwrap_or_else(|| panic!("values.schema.json: {path} has no description"));
        rows.push(format!(
            "| `{path}` | {kind} | {default} | {} |",
            description.replace('|', "\\|")
        ));
    }
    let chart = manifests::chart_dir();
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(chart.join("values.schema.json")).unwrap())
            .unwrap();
    let defaults: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap())
            .unwrap();
    let mut rows = vec![
        "| value | type | default | what |".to_string(),
        "|---|---|---|---|".to_string(),
    ];
    walk("", &schema, &defaults, &mut rows);
    rows.join("\n") + "\n"
}

#[test]
fn chart_readme_lists_every_value() {
    const BEGIN: &str = "<!-- values table: generated from values.schema.json -->\n";
    const END: &str = "<!-- end of values table -->";
    let path = manifests::chart_dir().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (head, rest) = readme.split_once(BEGIN).expect("the table's start marker");
    let (table, tail) = rest.split_once(END).expect("the table's end marker");
    let fresh = values_table();
    if table != fresh {
        if std::env::var_os("GPUPACK_UPDATE_CHART_README").is_some() {
            std::fs::write(&path, format!("{head}{BEGIN}{fresh}{END}{tail}")).unwrap();
        } else {
            panic!(
                "{}: the values table differs from values.schema.json and values.yaml; \
                 rewrite it with GPUPACK_UPDATE_CHART_README=1 cargo test -p e2e --test \
                 manifests chart_readme",
                path.display()
            );
        }
    }
}
