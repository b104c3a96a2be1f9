//! The agent's own services and checks: the desired state that anti-entropy keeps the catalog in
//! line with. Entries registered through the HTTP API are persisted under the data dir so that a
//! restart brings them back; entries from config files are re-read from the files instead.

use crate::structs::{Check, Service, Status};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LocalService {
    pub service: Service,
    pub from_config: bool,
    /// The ACL token it was registered with; its catalog sync uses it.
    #[serde(default)]
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LocalCheck {
    pub check: Check,
    pub from_config: bool,
    #[serde(default)]
    pub token: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Local {
    pub services: BTreeMap<String, LocalService>,
    pub checks: BTreeMap<String, LocalCheck>,
}

impl Local {
    fn file(dir: &Path) -> PathBuf {
        dir.join("local-state.json")
    }

    /// Loads what the API registered before a restart (an absent file is an empty state).
    pub fn load(dir: Option<&Path>) -> std::io::Result<Local> {
        let Some(dir) = dir else { return Ok(Local::default()) };
        match std::fs::read(Local::file(dir)) {
            Ok(bytes) => {
                let mut local: Local = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
                // Only what the API registered is persisted: whatever the file says, nothing
                // restored from it counts as the operator's own config (which may run scripts).
                local.services.values_mut().for_each(|s| s.from_config = false);
                local.checks.values_mut().for_each(|c| c.from_config = false);
                Ok(local)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Local::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the API-registered entries atomically (temp file, fsync, rename).
    pub fn persist(&self, dir: Option<&Path>) -> std::io::Result<()> {
        let Some(dir) = dir else { return Ok(()) };
        let keep = Local {
            services: self
                .services
                .iter()
                .filter(|(_, s)| !s.from_config)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            checks: self.checks.iter().filter(|(_, c)| !c.from_config).map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join("local-state.json.tmp");
        let bytes = serde_json::to_vec_pretty(&keep).map_err(std::io::Error::other)?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(tmp, Local::file(dir))
    }

    pub fn service_checks(&self, service_id: &str) -> Vec<Check> {
        self.checks.values().filter(|c| c.check.service_id == service_id).map(|c| c.check.clone()).collect()
    }

    /// Records a check result. Returns true if the status changed (which must sync at once).
    pub fn update_check(&mut self, id: &str, status: Status, output: &str) -> Option<bool> {
        let c = self.checks.get_mut(id)?;
        let changed = c.check.status != Some(status);
        c.check.status = Some(status);
        c.check.output = output.to_string();
        Some(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_only_api_registered_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut l = Local::default();
        l.services.insert(
            "a".into(),
            LocalService {
                service: Service { id: "a".into(), service: "a".into(), ..Default::default() },
                from_config: false,
                token: String::new(),
            },
        );
        l.services.insert(
            "b".into(),
            LocalService {
                service: Service { id: "b".into(), ..Default::default() },
                from_config: true,
                token: String::new(),
            },
        );
        l.persist(Some(dir.path())).expect("persist");
        let back = Local::load(Some(dir.path())).expect("load");
        assert!(back.services.contains_key("a"));
        assert!(!back.services.contains_key("b"));
        assert_eq!(Local::load(Some(&dir.path().join("nope"))).expect("absent is empty"), Local::default());
    }
}
