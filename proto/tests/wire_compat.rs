//! Wire compatibility with kubelet: bytes built by hand from upstream's field
//! numbers (not by the generated code) must decode into the expected fields,
//! and the generated code must encode exactly those bytes.

use std::collections::HashMap;

use prost::Message;
use proto::deviceplugin as dp;
use proto::podresources as pr;

/// Minimal protobuf writer, independent of prost.
#[derive(Default)]
struct Wire(Vec<u8>);

impl Wire {
    fn varint(&mut self, mut v: u64) -> &mut Self {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(byte);
                return self;
            }
            self.0.push(byte | 0x80);
        }
    }
    fn tag(&mut self, field: u64, wire_type: u64) -> &mut Self {
        self.varint(field << 3 | wire_type)
    }
    fn uint(&mut self, field: u64, v: u64) -> &mut Self {
        self.tag(field, 0).varint(v)
    }
    fn bytes(&mut self, field: u64, b: &[u8]) -> &mut Self {
        self.tag(field, 2).varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, field: u64, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }
    fn msg(&mut self, field: u64, m: &Wire) -> &mut Self {
        self.bytes(field, &m.0)
    }
    fn done(&mut self) -> Wire {
        Wire(std::mem::take(&mut self.0))
    }
}

#[test]
fn register_request() {
    let options = Wire::default().uint(2, 1).done(); // get_preferred_allocation_available
    let bytes = Wire::default()
        .str(1, "v1beta1")
        .str(2, "gpupack-gpu.sock")
        .str(3, "gpupack.io/gpu")
        .msg(4, &options)
        .done()
        .0;
    let req = dp::RegisterRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!(req.version, dp::constants::VERSION);
    assert_eq!(req.endpoint, "gpupack-gpu.sock");
    assert_eq!(req.resource_name, "gpupack.io/gpu");
    let opts = req.options.unwrap();
    assert!(opts.get_preferred_allocation_available);
    assert!(!opts.pre_start_required);
    assert_eq!(req.encode_to_vec(), bytes);
}

#[test]
fn device_with_numa_topology() {
    let numa = Wire::default().uint(1, 1).done(); // NUMANode.ID = 1
    let topology = Wire::default().msg(1, &numa).done();
    let device = Wire::default()
        .str(1, "GPU-1::s0")
        .str(2, "Healthy")
        .msg(3, &topology)
        .done();
    let list = Wire::default().msg(1, &device).msg(1, &device).done().0;
    let resp = dp::ListAndWatchResponse::decode(list.as_slice()).unwrap();
    assert_eq!(resp.devices.len(), 2);
    let d = &resp.devices[0];
    assert_eq!(d.id, "GPU-1::s0");
    assert_eq!(d.health, dp::constants::HEALTHY);
    assert_eq!(
        d.topology.as_ref().unwrap().nodes,
        vec![dp::NumaNode { id: 1 }]
    );
    assert_eq!(resp.encode_to_vec(), list);
}

#[test]
fn preferred_allocation_camel_case_fields() {
    let req = Wire::default()
        .str(1, "a")
        .str(1, "b")
        .str(1, "c")
        .str(2, "b")
        .uint(3, 2)
        .done();
    let bytes = Wire::default().msg(1, &req).done().0;
    let decoded = dp::PreferredAllocationRequest::decode(bytes.as_slice()).unwrap();
    let c = &decoded.container_requests[0];
    assert_eq!(c.available_device_i_ds, ["a", "b", "c"]);
    assert_eq!(c.must_include_device_i_ds, ["b"]);
    assert_eq!(c.allocation_size, 2);

    let resp = dp::PreferredAllocationResponse {
        container_responses: vec![dp::ContainerPreferredAllocationResponse {
            device_i_ds: vec!["b".into(), "c".into()],
        }],
    };
    let expected = Wire::default()
        .msg(1, &Wire::default().str(1, "b").str(1, "c").done())
        .done()
        .0;
    assert_eq!(resp.encode_to_vec(), expected);
}

#[test]
fn allocate_request_and_response() {
    let container = Wire::default()
        .str(1, "GPU-1::s0")
        .str(1, "GPU-1::m3")
        .done();
    let bytes = Wire::default().msg(1, &container).done().0;
    let req = dp::AllocateRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!(
        req.container_requests[0].devices_ids,
        ["GPU-1::s0", "GPU-1::m3"]
    );

    let env_entry = Wire::default()
        .str(1, "NVIDIA_VISIBLE_DEVICES")
        .str(2, "GPU-1")
        .done();
    let mount = Wire::default()
        .str(1, "/ctr")
        .str(2, "/host")
        .uint(3, 1)
        .done();
    let spec = Wire::default()
        .str(1, "/dev/nvidia0")
        .str(2, "/dev/nvidia0")
        .str(3, "rw")
        .done();
    let ann_entry = Wire::default().str(1, "k").str(2, "v").done();
    let cdi = Wire::default().str(1, "gpupack.io/gpu=GPU-1").done();
    let container = Wire::default()
        .msg(1, &env_entry)
        .msg(2, &mount)
        .msg(3, &spec)
        .msg(4, &ann_entry)
        .msg(5, &cdi)
        .done();
    let bytes = Wire::default().msg(1, &container).done().0;

    let resp = dp::AllocateResponse::decode(bytes.as_slice()).unwrap();
    let c = &resp.container_responses[0];
    assert_eq!(
        c.envs,
        HashMap::from([("NVIDIA_VISIBLE_DEVICES".to_string(), "GPU-1".to_string())])
    );
    assert_eq!(
        c.mounts,
        vec![dp::Mount {
            container_path: "/ctr".into(),
            host_path: "/host".into(),
            read_only: true
        }]
    );
    assert_eq!(c.devices[0].permissions, "rw");
    assert_eq!(c.annotations["k"], "v");
    assert_eq!(
        c.cdi_devices,
        vec![dp::CdiDevice {
            name: "gpupack.io/gpu=GPU-1".into()
        }]
    );
    assert_eq!(resp.encode_to_vec(), bytes);
}

#[test]
fn pod_resources_list() {
    let numa = Wire::default().uint(1, 0).done();
    let topology = Wire::default().msg(1, &numa).done();
    let devices = Wire::default()
        .str(1, "gpupack.io/gpu")
        .str(2, "GPU-1::s0")
        .msg(3, &topology)
        .done();
    let claim = Wire::default()
        .str(2, "gpu.example.com")
        .str(5, "share-1") // proto3 optional share_id
        .done();
    let dynamic = Wire::default()
        .str(2, "claim")
        .str(3, "ns")
        .msg(4, &claim)
        .done();
    let container = Wire::default()
        .str(1, "vllm")
        .msg(2, &devices)
        .uint(3, 7)
        .msg(5, &dynamic)
        .done();
    let pod = Wire::default()
        .str(1, "llm-0")
        .str(2, "serving")
        .msg(3, &container)
        .done();
    let bytes = Wire::default().msg(1, &pod).done().0;
    let resp = pr::ListPodResourcesResponse::decode(bytes.as_slice()).unwrap();
    let p = &resp.pod_resources[0];
    assert_eq!(
        (p.name.as_str(), p.namespace.as_str()),
        ("llm-0", "serving")
    );
    let c = &p.containers[0];
    assert_eq!(c.name, "vllm");
    assert_eq!(c.devices[0].resource_name, "gpupack.io/gpu");
    assert_eq!(c.devices[0].device_ids, ["GPU-1::s0"]);
    assert_eq!(c.cpu_ids, [7]);
    let claim = &c.dynamic_resources[0].claim_resources[0];
    assert_eq!(claim.driver_name, "gpu.example.com");
    assert_eq!(claim.share_id.as_deref(), Some("share-1"));
}

#[test]
fn grpc_paths_match_upstream() {
    // The generated service names carry the proto package, which is what goes
    // on the wire as the gRPC path prefix.
    assert_eq!(
        <dp::registration_server::RegistrationServer<Dummy> as tonic::server::NamedService>::NAME,
        "v1beta1.Registration"
    );
    assert_eq!(
        <dp::device_plugin_server::DevicePluginServer<Dummy> as tonic::server::NamedService>::NAME,
        "v1beta1.DevicePlugin"
    );
    assert_eq!(
        <pr::pod_resources_lister_server::PodResourcesListerServer<DummyPr> as tonic::server::NamedService>::NAME,
        "v1.PodResourcesLister"
    );
}

struct Dummy;

#[tonic::async_trait]
impl dp::registration_server::Registration for Dummy {
    async fn register(
        &self,
        _: tonic::Request<dp::RegisterRequest>,
    ) -> Result<tonic::Response<dp::Empty>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
}

#[tonic::async_trait]
impl dp::device_plugin_server::DevicePlugin for Dummy {
    type ListAndWatchStream = futures_stream::Empty;
    async fn get_device_plugin_options(
        &self,
        _: tonic::Request<dp::Empty>,
    ) -> Result<tonic::Response<dp::DevicePluginOptions>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn list_and_watch(
        &self,
        _: tonic::Request<dp::Empty>,
    ) -> Result<tonic::Response<Self::ListAndWatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn get_preferred_allocation(
        &self,
        _: tonic::Request<dp::PreferredAllocationRequest>,
    ) -> Result<tonic::Response<dp::PreferredAllocationResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn allocate(
        &self,
        _: tonic::Request<dp::AllocateRequest>,
    ) -> Result<tonic::Response<dp::AllocateResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn pre_start_container(
        &self,
        _: tonic::Request<dp::PreStartContainerRequest>,
    ) -> Result<tonic::Response<dp::PreStartContainerResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
}

struct DummyPr;

#[tonic::async_trait]
impl pr::pod_resources_lister_server::PodResourcesLister for DummyPr {
    async fn list(
        &self,
        _: tonic::Request<pr::ListPodResourcesRequest>,
    ) -> Result<tonic::Response<pr::ListPodResourcesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn get_allocatable_resources(
        &self,
        _: tonic::Request<pr::AllocatableResourcesRequest>,
    ) -> Result<tonic::Response<pr::AllocatableResourcesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn get(
        &self,
        _: tonic::Request<pr::GetPodResourcesRequest>,
    ) -> Result<tonic::Response<pr::GetPodResourcesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
}

mod futures_stream {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A stream that ends at once.
    pub struct Empty;

    impl tokio_stream::Stream for Empty {
        type Item = Result<super::dp::ListAndWatchResponse, tonic::Status>;
        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(None)
        }
    }
}
