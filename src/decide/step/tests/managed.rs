//! The managed Secret: never written over when it is someone else's, a refusal said and tried
//! again later, and a create that finds a Secret the cache had not seen read and decided again.

use super::*;

/// The managed Secret as credential `owner` would write it, holding `token` read from `src` at 5.
fn managed_secret_of(owner: &str, token: &str) -> Secret {
    let case = Case::secret_sourced();
    let settings = case.settings.as_ref().expect("resolves");
    let version = source::version("src", "5");
    let mut s = secret::desired(
        &case.tac,
        &settings.secret_name,
        &settings.base_url,
        &Token::new(token),
        Some(&version),
    );
    if let Some(labels) = s.metadata.labels.as_mut() {
        labels.insert(secret::CREDENTIAL_LABEL.to_owned(), owner.to_owned());
    }
    s.metadata.resource_version = Some("100".into());
    s
}

impl Case {
    /// The create finds a Secret the cache had not seen (409), and the read after it finds `found`.
    fn create_finds(mut self, found: Option<Secret>) -> Self {
        self.written = Written::Exists;
        self.found = found;
        self
    }
}

#[test]
fn someone_elses_secret_at_the_target_name_is_never_read_around_or_written() {
    let mut case = Case::secret_sourced().holding(&jwt("a"), "5");
    let mut s = Secret::default();
    s.metadata.name = Some("x".into());
    s.metadata.labels = Some(BTreeMap::from([(
        secret::CREDENTIAL_LABEL.to_owned(),
        "other".to_owned(),
    )]));
    case.target = Some(Observed::of(s));
    let run = case.run();
    assert_eq!(run.actions, ["write status", "finish"]);
    assert_eq!(run.ready(), Some(Reason::SecretConflict));
}

#[test]
fn a_secret_the_api_server_refuses_is_said_and_tried_again_in_minutes() {
    let mut case = Case::secret_sourced();
    case.written = Written::Refused("metadata.labels: Invalid value".into());
    let run = case.run();
    assert_eq!(run.actions, ["read source", "create secret", "write status", "finish"]);
    assert_eq!(run.ready(), Some(Reason::SecretRejected));
    assert_eq!(run.requeue, Some(REJECTED_RETRY + Duration::from_secs(1)));
}

#[test]
fn a_create_that_finds_someone_elses_secret_is_a_conflict() {
    let run = Case::secret_sourced()
        .create_finds(Some(managed_secret_of("other", &jwt("x"))))
        .run();
    assert_eq!(
        run.actions,
        [
            "read source",
            "create secret",
            "read managed secret",
            "write status",
            "finish"
        ]
    );
    assert_eq!(run.ready(), Some(Reason::SecretConflict));
}

#[test]
fn a_create_that_finds_our_own_secret_writes_only_what_differs() {
    // What we would have created (a watch that lagged behind our own create): nothing to write.
    let run = Case::secret_sourced()
        .create_finds(Some(managed_secret_of("c", &jwt("a"))))
        .run();
    assert_eq!(
        &run.actions[..4],
        ["read source", "create secret", "read managed secret", "recall answer"]
    );
    assert_eq!(run.written.len(), 1, "the create only");
    // Ours with another token: applied.
    let run = Case::secret_sourced()
        .create_finds(Some(managed_secret_of("c", &jwt("old"))))
        .run();
    assert_eq!(
        &run.actions[..4],
        ["read source", "create secret", "read managed secret", "apply secret"]
    );
}

#[test]
fn a_create_that_finds_a_secret_gone_again_creates_once_more_then_waits() {
    let run = Case::secret_sourced().create_finds(None).run();
    assert_eq!(
        run.actions,
        [
            "read source",
            "create secret",
            "read managed secret",
            "create secret",
            "write status",
            "finish"
        ]
    );
    assert_eq!(run.requeue, Some(RACE_RETRY + Duration::from_secs(1)));
    assert_ne!(run.ready(), Some(Reason::SecretConflict), "not a conflict");
}
