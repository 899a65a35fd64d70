//! Finding a usable cgroup interface: v2 when it offers `cpu` and `memory` to this
//! process's group and is writable, else v1. Every failed attempt contributes its reason
//! to the refusal, so the operator sees why each interface was not used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Cgroups, EnvelopeError, Hierarchy, mkdir, write};

/// This process's group per v1 controller, and its v2 path (`/proc/self/cgroup`).
#[derive(Debug, Default)]
struct OwnGroups {
    v1: BTreeMap<String, String>,
    v2: Option<String>,
}

impl OwnGroups {
    fn read() -> OwnGroups {
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        parse_proc_cgroup(&text)
    }
}

/// Parses `/proc/<pid>/cgroup` (`id:controllers:path` per line; v2 is `0::path`).
fn parse_proc_cgroup(text: &str) -> OwnGroups {
    let mut own = OwnGroups::default();
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            own.v2 = Some(path.to_string());
        } else {
            for c in ctrls.split(',') {
                own.v1.insert(c.to_string(), path.to_string());
            }
        }
    }
    own
}

/// `base/<own path>` when it exists (the usual case), else `base` (a mount whose root is
/// our own group already, as in a container with its own cgroup namespace, or a test
/// root).
fn own_dir(base: &Path, own: Option<&String>) -> PathBuf {
    if let Some(p) = own {
        let rel = p.trim_start_matches('/');
        if !rel.is_empty() {
            let d = base.join(rel);
            if d.is_dir() {
                return d;
            }
        }
    }
    base.to_path_buf()
}

pub(super) fn detect(root: &Path) -> Result<Cgroups, EnvelopeError> {
    if !root.is_dir() {
        return Err(EnvelopeError::Unavailable {
            reason: format!("{} is not a directory", root.display()),
        });
    }
    let own = OwnGroups::read();
    let mut reasons = Vec::new();
    for cand in [root.to_path_buf(), root.join("unified")] {
        if cand.join("cgroup.controllers").is_file() {
            match try_v2(&cand, &own) {
                Ok(c) => return Ok(c),
                Err(r) => reasons.push(r),
            }
        }
    }
    match try_v1(root, &own) {
        Ok(c) => return Ok(c),
        Err(r) => reasons.push(r),
    }
    Err(EnvelopeError::Unavailable {
        reason: reasons.join("; "),
    })
}

fn words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn try_v2(mount: &Path, own: &OwnGroups) -> Result<Cgroups, String> {
    let base = own_dir(mount, own.v2.as_ref());
    let offered = words(&base.join("cgroup.controllers"));
    let missing: Vec<&str> = ["cpu", "memory"]
        .into_iter()
        .filter(|c| !offered.iter().any(|o| o == c))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "cgroup v2 at {} offers controllers [{}], not {}",
            base.display(),
            offered.join(" "),
            missing.join(" and ")
        ));
    }
    let enabled = words(&base.join("cgroup.subtree_control"));
    if !(enabled.iter().any(|c| c == "cpu") && enabled.iter().any(|c| c == "memory")) {
        write(&base.join("cgroup.subtree_control"), "+cpu +memory").map_err(|e| {
            format!(
                "cgroup v2: cannot enable cpu and memory for sub-groups of {} ({e}); a group \
                 with processes in it cannot delegate controllers: start scaleout in a \
                 delegated, empty group (e.g. systemd-run --user -p Delegate=yes --scope)",
                base.display()
            )
        })?;
    }
    let parent = base.join("scaleout");
    mkdir(&parent).map_err(|e| format!("cgroup v2: {e}"))?;
    write(&parent.join("cgroup.subtree_control"), "+cpu +memory")
        .map_err(|e| format!("cgroup v2: {e}"))?;
    let probe = parent.join(format!(".probe-{}", std::process::id()));
    let res = mkdir(&probe).and_then(|()| write(&probe.join("cpu.max"), "max 100000"));
    let _ = std::fs::remove_dir(&probe);
    res.map_err(|e| format!("cgroup v2: {e}"))?;
    Ok(Cgroups {
        hierarchy: Hierarchy::V2 { parent },
    })
}

fn try_v1(root: &Path, own: &OwnGroups) -> Result<Cgroups, String> {
    let needs = [
        ("cpu", "cpu.cfs_quota_us"),
        ("cpuacct", "cpuacct.usage"),
        ("memory", "memory.limit_in_bytes"),
    ];
    let mut parents = Vec::new();
    for (ctrl, file) in needs {
        let mount = root.join(ctrl);
        if !mount.join(file).is_file() {
            return Err(format!(
                "no cgroup v1 {ctrl} hierarchy at {} (no {file})",
                mount.display()
            ));
        }
        // Co-mounted hierarchies (cpu,cpuacct) resolve to one directory.
        let mount = mount.canonicalize().unwrap_or(mount);
        let base = own_dir(&mount, own.v1.get(ctrl));
        let parent = base.join("scaleout");
        mkdir(&parent).map_err(|e| format!("cgroup v1 {ctrl}: {e}"))?;
        parents.push(parent);
    }
    // A probe group proves that limits can be written, not only directories made.
    let probe_name = format!(".probe-{}", std::process::id());
    let cpu_probe = parents[0].join(&probe_name);
    let mem_probe = parents[2].join(&probe_name);
    let res = mkdir(&cpu_probe)
        .and_then(|()| write(&cpu_probe.join("cpu.cfs_quota_us"), "-1"))
        .and_then(|()| mkdir(&mem_probe))
        .and_then(|()| write(&mem_probe.join("memory.limit_in_bytes"), "-1"));
    let _ = std::fs::remove_dir(&cpu_probe);
    let _ = std::fs::remove_dir(&mem_probe);
    res.map_err(|e| format!("cgroup v1: {e}"))?;
    let memory = parents.pop().unwrap_or_default();
    let cpuacct = parents.pop().unwrap_or_default();
    let cpu = parents.pop().unwrap_or_default();
    Ok(Cgroups {
        hierarchy: Hierarchy::V1 {
            cpu,
            cpuacct,
            memory,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_of_a_hybrid_host() {
        let own = parse_proc_cgroup(
            "9:name=systemd:/\n4:memory:/process_api/41dc\n2:cpu,cpuacct:/x\n0::/\n",
        );
        assert_eq!(own.v1["memory"], "/process_api/41dc");
        assert_eq!(own.v1["cpu"], "/x");
        assert_eq!(own.v1["cpuacct"], "/x");
        assert_eq!(own.v2.as_deref(), Some("/"));
    }
}
