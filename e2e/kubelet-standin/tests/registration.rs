//! Registration, ListAndWatch and kubelet restarts, driven by a fake plugin.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{FakePlugin, devices, options, register};
use kubelet_standin::{CHECKPOINT_FILE, Container, Kubelet, Options, Order, Pod};
use proto::deviceplugin::constants::VERSION;

const GPU: &str = "example.com/gpu";
const WAIT: Duration = Duration::from_secs(10);

async fn kubelet(dir: &std::path::Path) -> Kubelet {
    Kubelet::new(Options::new(dir).order(Order::Sorted))
        .await
        .unwrap()
}

#[tokio::test]
async fn register_dials_the_plugin_before_answering_and_records_the_registration() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = kubelet(dir.path()).await;
    let plugin = FakePlugin::serve(
        dir.path(),
        "fake-gpu.sock",
        devices("gpu", 4),
        options(true),
        "GPUS",
    );

    plugin
        .register(&kubelet.registration_socket(), GPU)
        .await
        .unwrap();
    // GetDevicePluginOptions was answered while Register was pending.
    assert_eq!(
        plugin
            .script
            .options_calls
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );

    let regs = kubelet.registrations();
    assert_eq!(regs.len(), 1);
    let reg = &regs[0];
    assert!(reg.accepted());
    assert_eq!(reg.resource, GPU);
    assert_eq!(reg.endpoint, "fake-gpu.sock");
    assert_eq!(reg.version, VERSION);
    assert_eq!(reg.options, Some(options(true)));
    assert_eq!(reg.requested_options, Some(options(true)));

    kubelet.wait_for_healthy(GPU, 4, WAIT).await.unwrap();
    let status = kubelet.resource(GPU).unwrap();
    assert_eq!(status.endpoint.as_deref(), Some("fake-gpu.sock"));
    assert_eq!(status.devices[0].topology.as_ref().unwrap().nodes[0].id, 0);
    assert_eq!(kubelet.capacity()[GPU].capacity, 4);
    assert_eq!(kubelet.capacity()[GPU].allocatable, 4);
}

#[tokio::test]
async fn a_plugin_not_serving_yet_gets_a_registration_error() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = Kubelet::new(Options::new(dir.path()).dial_timeout(Duration::from_millis(200)))
        .await
        .unwrap();

    let err = register(
        &kubelet.registration_socket(),
        VERSION,
        "not-yet.sock",
        GPU,
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unknown);
    assert!(
        err.message().starts_with("failed to dial device plugin"),
        "{}",
        err.message()
    );

    let regs = kubelet.registrations();
    assert_eq!(regs.len(), 1);
    assert!(!regs[0].accepted());
    assert!(kubelet.resource(GPU).is_none());
    assert_eq!(kubelet.capacity().get(GPU), None);
}

#[tokio::test]
async fn unsupported_versions_and_non_extended_resource_names_are_rejected_without_dialling() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = kubelet(dir.path()).await;
    let plugin = FakePlugin::serve(
        dir.path(),
        "fake.sock",
        devices("gpu", 1),
        options(false),
        "GPUS",
    );
    let socket = kubelet.registration_socket();

    let err = register(&socket, "v1alpha1", "fake.sock", GPU, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unknown);
    assert!(
        err.message()
            .contains("requested API version \"v1alpha1\" is not supported"),
        "{}",
        err.message()
    );

    for name in ["kubernetes.io/gpu", "gpu", "Example.com/gpu"] {
        let err = register(&socket, VERSION, "fake.sock", name, None)
            .await
            .unwrap_err();
        assert_eq!(
            err.message(),
            format!("the ResourceName {name:?} is invalid")
        );
    }
    assert_eq!(
        plugin
            .script
            .options_calls
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert_eq!(kubelet.accepted_registrations(), 0);
    assert_eq!(kubelet.registrations().len(), 4);
}

#[tokio::test]
async fn device_lists_replace_each_other_and_a_closed_stream_makes_every_device_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = kubelet(dir.path()).await;
    let plugin = FakePlugin::serve(
        dir.path(),
        "fake.sock",
        devices("gpu", 4),
        options(false),
        "GPUS",
    );
    plugin
        .register(&kubelet.registration_socket(), GPU)
        .await
        .unwrap();
    kubelet.wait_for_healthy(GPU, 4, WAIT).await.unwrap();

    plugin.set_health("gpu-2", false);
    kubelet.wait_for_healthy(GPU, 3, WAIT).await.unwrap();
    let cap = kubelet.capacity()[GPU];
    assert_eq!((cap.capacity, cap.allocatable), (4, 3));

    // A smaller list replaces the whole set, it does not merge.
    plugin.set_devices(devices("gpu", 2));
    kubelet
        .wait_until("2 devices", WAIT, |k| {
            k.resource(GPU).unwrap().devices.len() == 2
        })
        .await
        .unwrap();
    assert!(kubelet.resource(GPU).unwrap().stopped_at.is_none());

    plugin.stop().await;
    kubelet
        .wait_until("endpoint stopped", WAIT, |k| {
            k.resource(GPU).unwrap().stopped_at.is_some()
        })
        .await
        .unwrap();
    let cap = kubelet.capacity()[GPU];
    assert_eq!(
        (cap.capacity, cap.allocatable),
        (2, 0),
        "devices stay in capacity, unhealthy, for the grace period"
    );
}

#[tokio::test]
async fn capacity_drops_a_stopped_resource_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = Kubelet::new(Options::new(dir.path()).endpoint_stop_grace_period(Duration::ZERO))
        .await
        .unwrap();
    let plugin = FakePlugin::serve(
        dir.path(),
        "fake.sock",
        devices("gpu", 2),
        options(false),
        "GPUS",
    );
    plugin
        .register(&kubelet.registration_socket(), GPU)
        .await
        .unwrap();
    kubelet.wait_for_healthy(GPU, 2, WAIT).await.unwrap();
    plugin.stop().await;
    kubelet
        .wait_until("endpoint stopped", WAIT, |k| {
            k.resource(GPU).is_some_and(|r| r.stopped_at.is_some())
        })
        .await
        .unwrap();
    kubelet
        .wait_until("resource removed", WAIT, |k| {
            !k.capacity().contains_key(GPU)
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_second_registration_replaces_the_endpoint_and_the_old_stream_no_longer_counts() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = kubelet(dir.path()).await;
    let old = FakePlugin::serve(
        dir.path(),
        "old.sock",
        devices("old", 2),
        options(false),
        "GPUS",
    );
    old.register(&kubelet.registration_socket(), GPU)
        .await
        .unwrap();
    kubelet.wait_for_healthy(GPU, 2, WAIT).await.unwrap();

    let new = FakePlugin::serve(
        dir.path(),
        "new.sock",
        devices("new", 3),
        options(false),
        "GPUS",
    );
    new.register(&kubelet.registration_socket(), GPU)
        .await
        .unwrap();
    kubelet.wait_for_healthy(GPU, 3, WAIT).await.unwrap();
    assert_eq!(
        kubelet.resource(GPU).unwrap().endpoint.as_deref(),
        Some("new.sock")
    );

    // The old plugin's updates and its stream's end are ignored.
    old.set_health("old-0", false);
    old.stop().await;
    new.set_health("new-0", false);
    kubelet.wait_for_healthy(GPU, 2, WAIT).await.unwrap();
    let status = kubelet.resource(GPU).unwrap();
    assert!(status.stopped_at.is_none());
    assert!(status.devices.iter().all(|d| d.id.starts_with("new-")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_deletes_plugin_sockets_forgets_capacity_keeps_allocations_and_recreates_kubelet_sock()
 {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = kubelet(dir.path()).await;
    let plugin = FakePlugin::serve(
        dir.path(),
        "fake.sock",
        devices("gpu", 4),
        options(false),
        "GPUS",
    );
    plugin
        .register(&kubelet.registration_socket(), GPU)
        .await
        .unwrap();
    kubelet.wait_for_healthy(GPU, 4, WAIT).await.unwrap();
    let pod = Pod::new("u1", "default", "p1").container(Container::new("c").request(GPU, 3));
    let admitted = kubelet.admit(&pod).await.unwrap();

    std::fs::create_dir(dir.path().join("subdir")).unwrap();
    std::fs::write(dir.path().join("stray-file"), b"x").unwrap();
    // Plugins learn of the restart from the Create event of kubelet.sock.
    let (events_tx, events) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(events_tx).unwrap();
    notify::Watcher::watch(
        &mut watcher,
        dir.path(),
        notify::RecursiveMode::NonRecursive,
    )
    .unwrap();

    kubelet.restart().await.unwrap();

    let created = loop {
        let event: notify::Event = events.recv_timeout(WAIT).unwrap().unwrap();
        if event.kind.is_create() && event.paths.iter().any(|p| p.ends_with("kubelet.sock")) {
            break event;
        }
    };
    assert!(created.kind.is_create());

    assert!(!plugin.socket.exists(), "plugin socket must be deleted");
    assert!(!dir.path().join("stray-file").exists());
    assert!(dir.path().join("subdir").is_dir());
    assert!(dir.path().join(CHECKPOINT_FILE).is_file());

    let cap = kubelet.capacity()[GPU];
    assert_eq!((cap.capacity, cap.allocatable), (0, 0));
    assert_eq!(kubelet.resource(GPU).unwrap().endpoint, None);
    assert_eq!(kubelet.pod("u1").unwrap(), admitted);
    // Admission waits for the plugin to come back.
    let next = Pod::new("u2", "default", "p2").container(Container::new("c").request(GPU, 1));
    assert!(matches!(
        kubelet.admit(&next).await,
        Err(kubelet_standin::AdmitError::Insufficient { available: 0, .. })
    ));

    // The plugin re-serves on a fresh socket and registers again.
    plugin.stop().await;
    let plugin = FakePlugin::serve(
        dir.path(),
        "fake.sock",
        devices("gpu", 4),
        options(false),
        "GPUS",
    );
    let changes = kubelet.subscribe();
    plugin
        .register(&kubelet.registration_socket(), GPU)
        .await
        .unwrap();
    assert!(changes.has_changed().unwrap());
    kubelet.wait_for_healthy(GPU, 4, WAIT).await.unwrap();
    let again = kubelet.registrations().pop().unwrap();
    assert!(again.accepted() && again.at >= kubelet.started_at().unwrap());
    // Three devices are still held by the first pod.
    let big = Pod::new("u3", "default", "p3").container(Container::new("c").request(GPU, 2));
    assert!(matches!(
        kubelet.admit(&big).await,
        Err(kubelet_standin::AdmitError::Insufficient {
            requested: 2,
            available: 1,
            ..
        })
    ));
    kubelet.admit(&next).await.unwrap();
}

#[tokio::test]
async fn a_stopped_kubelet_has_no_socket_and_a_started_one_accepts_registrations() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = Kubelet::stopped(Options::new(dir.path()));
    let plugin = FakePlugin::serve(
        dir.path(),
        "fake.sock",
        devices("gpu", 1),
        options(false),
        "GPUS",
    );
    assert!(!kubelet.registration_socket().exists());
    assert!(
        plugin
            .register(&kubelet.registration_socket(), GPU)
            .await
            .is_err()
    );

    kubelet.start().await.unwrap();
    // Starting deleted the plugin's socket, as kubelet does.
    assert!(!plugin.socket.exists());
    let plugin = FakePlugin::serve(
        dir.path(),
        "fake.sock",
        devices("gpu", 1),
        options(false),
        "GPUS",
    );
    plugin
        .register(&kubelet.registration_socket(), GPU)
        .await
        .unwrap();
    kubelet.wait_for_healthy(GPU, 1, WAIT).await.unwrap();

    kubelet.stop().await;
    assert!(!kubelet.registration_socket().exists());
    assert!(!kubelet.pod_resources_socket().unwrap().exists());
    assert!(
        plugin.socket.exists(),
        "a kubelet that went away deletes nothing"
    );
    assert_eq!(kubelet.healthy(GPU), 0);
    let pod = Pod::new("u", "default", "p").container(Container::new("c").request(GPU, 1));
    assert!(matches!(
        kubelet.admit(&pod).await,
        Err(kubelet_standin::AdmitError::NotRunning { .. })
    ));

    kubelet.start().await.unwrap();
    assert!(kubelet.registration_socket().exists());
    kubelet.shutdown().await;
    assert!(!dir.path().join("kubelet.sock").exists());
}

#[tokio::test]
async fn dropping_the_kubelet_removes_its_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = kubelet(dir.path()).await;
    let socket = kubelet.registration_socket();
    let pr_socket = kubelet.pod_resources_socket().unwrap();
    assert!(socket.exists() && pr_socket.exists());
    drop(kubelet);
    assert!(!socket.exists());
    assert!(!pr_socket.exists());
}

#[tokio::test]
async fn register_keeps_dialling_until_the_plugin_serves_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = kubelet(dir.path()).await;
    let socket = kubelet.registration_socket();
    let pending =
        tokio::spawn(async move { register(&socket, VERSION, "late.sock", GPU, None).await });
    // Serve only once kubelet is dialling (its first attempt has failed by
    // the time the handler yields).
    kubelet
        .wait_until("a pending registration", WAIT, |k| {
            k.registrations_in_flight() == 1
        })
        .await
        .unwrap();
    let plugin = FakePlugin::serve(
        dir.path(),
        "late.sock",
        devices("gpu", 1),
        options(false),
        "GPUS",
    );
    pending.await.unwrap().unwrap();
    kubelet.wait_for_healthy(GPU, 1, WAIT).await.unwrap();
    let reg = kubelet.registrations().pop().unwrap();
    assert!(reg.accepted());
    assert!(reg.dial_attempts >= 2, "attempts: {}", reg.dial_attempts);
    assert_eq!(kubelet.registrations_in_flight(), 0);
    drop(plugin);
}
