//! What this process wrote that a watch has not delivered yet, by one rule for every table (the
//! credentials' statuses in [`super::memory`], the managed Secrets in [`super::managed`]): a write
//! made over the version the table holds serves while the table still holds that version, and is
//! dropped once the watch delivers another one (our write, or a later one) or the deletion. A
//! reconcile that outran the watch must not probe, create or write again from the older version.

/// One write of ours, over the version the table held when it was made.
pub(super) struct OwnWrite<V> {
    over: Option<Box<str>>,
    value: V,
}

impl<V> OwnWrite<V> {
    /// `value`, written over version `over` (`None`: the table held nothing).
    pub(super) fn new(over: Option<&str>, value: V) -> Self {
        Self {
            over: over.map(Box::from),
            value,
        }
    }

    /// The write, while the table still holds the version it was made over.
    pub(super) fn serves(&self, held: Option<&str>) -> Option<&V> {
        (self.over.as_deref() == held).then_some(&self.value)
    }

    /// Whether the watch's delivery of version `delivered` (or of the deletion) supersedes it.
    pub(super) fn superseded_by(&self, delivered: Option<&str>, deleted: bool) -> bool {
        deleted || self.over.as_deref() != delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_serves_over_its_version_until_another_is_delivered() {
        let w = OwnWrite::new(Some("1"), "ours");
        assert_eq!(w.serves(Some("1")), Some(&"ours"));
        assert_eq!(w.serves(Some("2")), None, "the table moved on");
        assert!(!w.superseded_by(Some("1"), false), "the version written over, again");
        assert!(w.superseded_by(Some("2"), false));
        assert!(w.superseded_by(Some("1"), true), "deleted");
        let created = OwnWrite::new(None, "ours");
        assert_eq!(
            created.serves(None),
            Some(&"ours"),
            "created where the table held nothing"
        );
    }
}
