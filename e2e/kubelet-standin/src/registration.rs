//! kubelet's `Registration` service and the `ListAndWatch` reader it starts
//! for every plugin (`devicemanager/plugin/v1beta1/{server,client,handler}.go`).

use std::sync::Arc;
use std::time::Instant;

use proto::deviceplugin::constants::SUPPORTED_VERSIONS;
use proto::deviceplugin::device_plugin_client::DevicePluginClient;
use proto::deviceplugin::registration_server::Registration as RegistrationApi;
use proto::deviceplugin::{Empty, RegisterRequest};
use tonic::{Request, Response, Status};

use crate::resource_name::is_extended_resource_name;
use crate::state::{Endpoint, Registration, Resource, Shared};
use crate::transport::dial_plugin;

#[derive(Debug, Clone)]
pub(crate) struct RegistrationService {
    pub(crate) shared: Arc<Shared>,
}

#[tonic::async_trait]
impl RegistrationApi for RegistrationService {
    /// kubelet's `server.Register`: checks the version and the resource name,
    /// then, before answering, dials the plugin (blocking, 10 s), asks for its
    /// options and installs it as the resource's endpoint, replacing any
    /// earlier one; then starts reading `ListAndWatch`. A plugin that is not
    /// serving yet, or cannot answer while its `Register` is pending, gets an
    /// error.
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let req = request.into_inner();
        let epoch = self.shared.update(|s| {
            s.registering += 1;
            s.epoch
        });
        // Counts down even if the plugin hangs up mid-call and this future is dropped.
        let _in_flight = InFlight(Arc::clone(&self.shared));
        tracing::info!(resource = %req.resource_name, endpoint = %req.endpoint, version = %req.version, "registration request");
        let mut dial_attempts = 0;
        let outcome = self.connect(&req, epoch, &mut dial_attempts).await;
        let (options, outcome) = match outcome {
            Ok(options) => (Some(options), Ok(())),
            Err(message) => {
                tracing::info!(resource = %req.resource_name, error = %message, "registration rejected");
                (None, Err(message))
            }
        };
        let record = Registration {
            resource: req.resource_name.clone(),
            endpoint: req.endpoint.clone(),
            version: req.version.clone(),
            requested_options: req.options,
            options,
            at: Instant::now(),
            dial_attempts,
            outcome: outcome.clone(),
        };
        self.shared.update(|s| s.registrations.push(record));
        // grpc-go turns a plain Go error into code Unknown.
        outcome
            .map(|()| Response::new(Empty {}))
            .map_err(Status::unknown)
    }
}

struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .update(|s| s.registering = s.registering.saturating_sub(1));
    }
}

impl RegistrationService {
    async fn connect(
        &self,
        req: &RegisterRequest,
        epoch: u64,
        dial_attempts: &mut u32,
    ) -> Result<proto::deviceplugin::DevicePluginOptions, String> {
        if !SUPPORTED_VERSIONS.contains(&req.version.as_str()) {
            return Err(format!(
                "requested API version {:?} is not supported by kubelet. Supported versions are {:?}",
                req.version, SUPPORTED_VERSIONS
            ));
        }
        if !is_extended_resource_name(&req.resource_name) {
            return Err(format!(
                "the ResourceName {:?} is invalid",
                req.resource_name
            ));
        }
        let socket = self.shared.options.device_plugin_dir.join(&req.endpoint);
        if self.shared.options.legacy_socket_authority {
            // kubelet 1.25: `Register` returns before the plugin is called.
            let shared = Arc::clone(&self.shared);
            let resource = req.resource_name.clone();
            let timeout = self.shared.options.dial_timeout;
            tokio::spawn(async move {
                let method = "/v1beta1.DevicePlugin/ListAndWatch";
                if let Err(error) =
                    crate::legacy::call_with_path_authority(&socket, method, timeout).await
                {
                    tracing::warn!(%resource, %error, "ListAndWatch failed");
                    shared.update(|s| s.failed_plugin_calls.push((resource, error)));
                }
            });
            return Ok(proto::deviceplugin::DevicePluginOptions::default());
        }
        let (channel, attempts) = dial_plugin(&socket, self.shared.options.dial_timeout).await;
        *dial_attempts = attempts;
        let channel = channel?;
        let mut client = DevicePluginClient::new(channel);
        let options = client
            .get_device_plugin_options(Empty {})
            .await
            .map_err(|status| format!("failed to get device plugin options: {}", status.message()))?
            .into_inner();

        let shared = Arc::clone(&self.shared);
        let resource = req.resource_name.clone();
        let installed = self.shared.update(|s| {
            if !s.running || s.epoch != epoch {
                return None;
            }
            s.next_generation += 1;
            let generation = s.next_generation;
            let entry = s
                .resources
                .entry(resource.clone())
                .or_insert_with(Resource::default);
            entry.endpoint = Some(Endpoint {
                generation,
                socket: req.endpoint.clone(),
                options,
                client: Some(client.clone()),
            });
            entry.stopped_at = None;
            entry.updates = 0;
            let task = tokio::spawn(list_and_watch(shared, resource, generation, client));
            s.streams.retain(|h| !h.is_finished());
            s.streams.push(task.abort_handle());
            Some(())
        });
        installed
            .map(|()| options)
            .ok_or_else(|| "kubelet is shutting down".to_string())
    }
}

/// kubelet's `client.Run`: each message is the resource's complete device
/// list; when the stream ends or fails, `PluginDisconnected` marks every
/// device unhealthy and stamps the stop time. Only the stream of the current
/// registration counts: recent kubelets key clients by socket so that an old
/// stream ending does not disconnect its replacement.
async fn list_and_watch(
    shared: Arc<Shared>,
    resource: String,
    generation: u64,
    mut client: DevicePluginClient<tonic::transport::Channel>,
) {
    let current = |s: &crate::state::State| {
        s.resources
            .get(&resource)
            .and_then(|r| r.endpoint.as_ref())
            .is_some_and(|e| e.generation == generation)
    };
    let ended = match client.list_and_watch(Empty {}).await {
        Err(status) => status.to_string(),
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(update)) => {
                        tracing::debug!(%resource, devices = update.devices.len(), "device list");
                        shared.update(|s| {
                            if !current(s) {
                                return;
                            }
                            if let Some(r) = s.resources.get_mut(&resource) {
                                r.devices = update
                                    .devices
                                    .into_iter()
                                    .map(|d| (d.id.clone(), d))
                                    .collect();
                                r.updates += 1;
                            }
                        });
                    }
                    Ok(None) => break "stream closed".to_string(),
                    Err(status) => break status.to_string(),
                }
            }
        }
    };
    tracing::info!(%resource, reason = %ended, "ListAndWatch ended; marking devices unhealthy");
    shared.update(|s| {
        if current(s)
            && let Some(r) = s.resources.get_mut(&resource)
        {
            r.stop(Instant::now());
        }
    });
}
