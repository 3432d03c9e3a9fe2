//! kubelet's checkpoint file in the device plugin directory. kubelet keeps it
//! when it cleans the directory on start; plugins must leave it alone.

use std::path::Path;

use crate::error::Error;
use crate::state::State;

/// Writes the registered devices and the pods' devices, in the shape of
/// kubelet's `kubelet_internal_checkpoint` (without its checksum).
pub(crate) fn write(path: &Path, state: &State) -> Result<(), Error> {
    let entries: Vec<_> = state
        .pods
        .iter()
        .flat_map(|pod| {
            pod.containers.iter().flat_map(move |c| {
                c.devices.iter().map(move |(resource, devices)| {
                    serde_json::json!({
                        "PodUID": pod.uid,
                        "ContainerName": c.name,
                        "ResourceName": resource,
                        "DeviceIDs": devices.iter().map(|d| &d.id).collect::<Vec<_>>(),
                    })
                })
            })
        })
        .collect();
    let registered: serde_json::Map<_, _> = state
        .resources
        .iter()
        .map(|(name, r)| {
            (
                name.clone(),
                serde_json::json!(r.devices.keys().collect::<Vec<_>>()),
            )
        })
        .collect();
    let doc = serde_json::json!({
        "Data": {"PodDeviceEntries": entries, "RegisteredDevices": registered},
    });
    std::fs::write(path, doc.to_string()).map_err(|source| Error::Checkpoint {
        path: path.to_path_buf(),
        source,
    })
}
