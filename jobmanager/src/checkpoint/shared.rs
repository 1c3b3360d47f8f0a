//! Reference counts of the files shared by incremental checkpoints.

use std::collections::{BTreeMap, BTreeSet};

/// Reference counts of shared files: one reference per retained completed checkpoint using it.
#[derive(Debug, Default)]
pub struct SharedRegistry {
    refs: BTreeMap<String, u32>,
}

impl SharedRegistry {
    /// How many retained checkpoints use `uri`.
    pub fn references(&self, uri: &str) -> u32 {
        self.refs.get(uri).copied().unwrap_or(0)
    }

    /// Adds one reference to each of `uris`.
    pub(crate) fn register(&mut self, uris: &BTreeSet<String>) {
        for uri in uris {
            *self.refs.entry(uri.clone()).or_insert(0) += 1;
        }
    }

    /// Drops one reference to each of `uris`; returns those no longer referenced.
    pub(crate) fn release(&mut self, uris: BTreeSet<String>) -> BTreeSet<String> {
        uris.into_iter()
            .filter(|uri| match self.refs.get_mut(uri) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    self.refs.remove(uri);
                    true
                }
                None => false,
            })
            .collect()
    }
}
