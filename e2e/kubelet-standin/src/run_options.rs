//! What the container runtime would receive for a container: kubelet's
//! `deviceRunContainerOptions`, merging the `Allocate` responses of all the
//! container's resources.

use std::collections::BTreeMap;

use proto::deviceplugin::{ContainerAllocateResponse, DeviceSpec, Mount};

/// The merged environment, mounts, device nodes, annotations and CDI devices
/// of one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    pub envs: BTreeMap<String, String>,
    pub mounts: Vec<Mount>,
    pub devices: Vec<DeviceSpec>,
    pub annotations: BTreeMap<String, String>,
    /// Fully qualified CDI device names.
    pub cdi_devices: Vec<String>,
    /// Settings two resources disagreed on. kubelet keeps the first it sees
    /// (in an order that varies, since it iterates a Go map) and only logs
    /// the conflict, so any entry here makes a container's setup ambiguous.
    pub conflicts: Vec<Conflict>,
}

/// Two resources set one key to different values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// `env`, `mount`, `device` or `annotation`.
    pub kind: &'static str,
    /// The variable name, container path or annotation key.
    pub key: String,
    pub kept: String,
    pub dropped: String,
}

impl RunOptions {
    /// Merges `responses` in the given order; the first setting of a key wins.
    pub fn merge<'a>(
        responses: impl IntoIterator<Item = &'a ContainerAllocateResponse>,
    ) -> RunOptions {
        let mut out = RunOptions::default();
        for resp in responses {
            let mut envs: Vec<_> = resp.envs.iter().collect();
            envs.sort();
            for (k, v) in envs {
                merge_value(&mut out.envs, &mut out.conflicts, "env", k, v);
            }
            for dev in &resp.devices {
                match out
                    .devices
                    .iter()
                    .find(|d| d.container_path == dev.container_path)
                {
                    Some(d) if d.host_path != dev.host_path => out.conflicts.push(Conflict {
                        kind: "device",
                        key: dev.container_path.clone(),
                        kept: d.host_path.clone(),
                        dropped: dev.host_path.clone(),
                    }),
                    Some(_) => {}
                    None => out.devices.push(dev.clone()),
                }
            }
            for mount in &resp.mounts {
                match out
                    .mounts
                    .iter()
                    .find(|m| m.container_path == mount.container_path)
                {
                    Some(m) if m.host_path != mount.host_path => out.conflicts.push(Conflict {
                        kind: "mount",
                        key: mount.container_path.clone(),
                        kept: m.host_path.clone(),
                        dropped: mount.host_path.clone(),
                    }),
                    Some(_) => {}
                    None => out.mounts.push(mount.clone()),
                }
            }
            let mut annotations: Vec<_> = resp.annotations.iter().collect();
            annotations.sort();
            for (k, v) in annotations {
                merge_value(&mut out.annotations, &mut out.conflicts, "annotation", k, v);
            }
            for cdi in &resp.cdi_devices {
                if !out.cdi_devices.contains(&cdi.name) {
                    out.cdi_devices.push(cdi.name.clone());
                }
            }
        }
        out
    }
}

fn merge_value(
    map: &mut BTreeMap<String, String>,
    conflicts: &mut Vec<Conflict>,
    kind: &'static str,
    key: &str,
    value: &str,
) {
    match map.get(key) {
        Some(kept) if kept != value => conflicts.push(Conflict {
            kind,
            key: key.to_string(),
            kept: kept.clone(),
            dropped: value.to_string(),
        }),
        Some(_) => {}
        None => {
            map.insert(key.to_string(), value.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::deviceplugin::CdiDevice;

    fn resp(
        envs: &[(&str, &str)],
        mounts: &[(&str, &str)],
        cdi: &[&str],
    ) -> ContainerAllocateResponse {
        ContainerAllocateResponse {
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            mounts: mounts
                .iter()
                .map(|(c, h)| Mount {
                    container_path: c.to_string(),
                    host_path: h.to_string(),
                    read_only: true,
                })
                .collect(),
            cdi_devices: cdi
                .iter()
                .map(|n| CdiDevice {
                    name: n.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn first_setting_wins_and_disagreements_are_recorded() {
        let a = resp(&[("A", "1"), ("SAME", "x")], &[("/m", "/h1")], &["v/c=1"]);
        let b = resp(
            &[("A", "2"), ("SAME", "x"), ("B", "3")],
            &[("/m", "/h2")],
            &["v/c=1", "v/c=2"],
        );
        let run = RunOptions::merge([&a, &b]);
        assert_eq!(run.envs["A"], "1");
        assert_eq!(run.envs["B"], "3");
        assert_eq!(run.mounts.len(), 1);
        assert_eq!(run.cdi_devices, ["v/c=1", "v/c=2"]);
        let kinds: Vec<_> = run
            .conflicts
            .iter()
            .map(|c| (c.kind, c.key.as_str()))
            .collect();
        assert_eq!(kinds, [("env", "A"), ("mount", "/m")]);
    }
}
