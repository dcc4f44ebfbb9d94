//! Requests counted by (verb, resource) and faults waiting to be injected on them: what the API
//! server double and the client-side tap both keep.

use std::collections::BTreeMap;

#[derive(Default)]
pub(crate) struct RequestBook {
    counts: BTreeMap<(String, String), u64>,
    faults: Vec<(String, String, u16)>,
}

impl RequestBook {
    /// Counts one request; returns the status code of a fault injected for it, if one waits.
    pub(crate) fn record(&mut self, verb: &str, resource: &str) -> Option<u16> {
        *self.counts.entry((verb.to_owned(), resource.to_owned())).or_default() += 1;
        let i = self.faults.iter().position(|(v, r, _)| v == verb && r == resource)?;
        Some(self.faults.remove(i).2)
    }

    /// The next request with this verb on this resource fails with `code`.
    pub(crate) fn fail_next(&mut self, verb: &str, resource: &str, code: u16) {
        self.faults.push((verb.into(), resource.into(), code));
    }

    pub(crate) fn counts(&self) -> &BTreeMap<(String, String), u64> {
        &self.counts
    }

    pub(crate) fn count(&self, verb: &str, resource: &str) -> u64 {
        self.counts
            .get(&(verb.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn clear(&mut self) {
        self.counts.clear();
    }
}
