//! `lab down`: removing a lab from its record, also after a crash.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::processes::{namespace_exists, processes_using};
use super::record::{LabRecord, Process};
use super::STOP_TIMEOUT;
/// What is left after a teardown (empty when everything is gone).
#[derive(Debug, Default)]
pub struct Leftovers {
    /// Processes still running.
    pub processes: Vec<Process>,
    /// Processes the record does not name that still run with the lab's folder on their
    /// command line (a daemon started by a keeper that crashed before it recorded it).
    pub unrecorded: Vec<u32>,
    /// Namespaces still there.
    pub namespaces: Vec<String>,
    /// Files and folders still there.
    pub paths: Vec<PathBuf>,
}

impl Leftovers {
    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
            && self.unrecorded.is_empty()
            && self.namespaces.is_empty()
            && self.paths.is_empty()
    }
}

/// What of `record` still exists.
pub fn leftovers(record: &LabRecord) -> Leftovers {
    let mut paths: Vec<PathBuf> = record
        .wireguard_sockets
        .iter()
        .filter(|p| p.exists())
        .cloned()
        .collect();
    if record.lab_dir.exists() {
        paths.push(record.lab_dir.clone());
    }
    Leftovers {
        processes: record
            .processes()
            .into_iter()
            .filter(|p| p.alive())
            .cloned()
            .collect(),
        unrecorded: processes_using(&record.lab_dir),
        namespaces: record
            .namespaces
            .iter()
            .filter(|n| namespace_exists(n))
            .cloned()
            .collect(),
        paths,
    }
}

/// Removes the lab of `record`: stops the keeper (which removes its lab), then whatever is
/// left, daemons before namespaces. Fails naming anything that would not go.
pub fn teardown(record: &LabRecord) -> anyhow::Result<()> {
    record.keeper.stop(STOP_TIMEOUT);
    for process in record.processes() {
        process.stop(STOP_TIMEOUT);
    }
    // What the record does not name: processes still inside the lab's namespaces, and any
    // other process running from the lab's folder.
    for ns in &record.namespaces {
        if namespace_exists(ns) {
            crate::netns::empty_and_delete(ns, STOP_TIMEOUT);
        }
    }
    for pid in processes_using(&record.lab_dir) {
        if let Ok(process) = Process::of("unrecorded lab process", pid) {
            process.stop(STOP_TIMEOUT);
        }
    }
    for socket in &record.wireguard_sockets {
        let _ = std::fs::remove_file(socket);
    }
    if record.lab_dir.exists() {
        let _ = std::fs::remove_dir_all(&record.lab_dir);
    }
    let left = leftovers(record);
    anyhow::ensure!(
        left.is_empty(),
        "could not remove all of lab {}: {left:?}",
        record.id
    );
    Ok(())
}

/// `lab down`: removes the lab recorded in `state_dir`, then its `lab.json`. Returns the id of
/// the lab removed, `None` when none was recorded.
pub fn down(state_dir: &Path) -> anyhow::Result<Option<String>> {
    let Some(record) = LabRecord::read(state_dir)? else {
        return Ok(None);
    };
    teardown(&record)?;
    let path = LabRecord::path(state_dir);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(Some(record.id))
}
