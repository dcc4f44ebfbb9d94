//! Typed builders for what scenarios create, over the CRD types (`credential("a").provider("raise")
//! .retain()`), and typed reads of what the operator decided: a scenario states its inputs and
//! expectations in the operator's own vocabulary, and a misspelt field does not compile.

use serde_json::Value;
use tenantcred::crd::{
    DeletionPolicy, OAuthSpec, ProviderName, SecretKeyRef, SecretNameRef, TenantApiCredential, TenantApiCredentialSpec,
    TenantApiCredentialStatus, WorkloadKind, WorkloadRef,
};
use tenantcred::decide::conditions::{Reason, Status, Type};

/// A credential being described. Defaults: tenant `acme`, provider `generic`, its token in Secret
/// `<name>-input` under key `token`.
#[derive(Clone, Debug)]
pub struct Credential(TenantApiCredential);

/// A credential named `name`, with the defaults of [`Credential`].
pub fn credential(name: &str) -> Credential {
    let spec = TenantApiCredentialSpec {
        tenant: "acme".into(),
        provider: ProviderName("generic".into()),
        base_url: None,
        credential_ref: Some(secret_key(&format!("{name}-input"))),
        pending_credential_ref: None,
        oauth: None,
        probe: Default::default(),
        expiry: Default::default(),
        target: Default::default(),
        rollout_restart_targets: Vec::new(),
        suspend: false,
    };
    Credential(TenantApiCredential::new(name, spec))
}

/// The key `token` of Secret `secret`.
pub fn secret_key(secret: &str) -> SecretKeyRef {
    SecretKeyRef {
        name: secret.into(),
        key: "token".into(),
    }
}

impl Credential {
    pub fn tenant(mut self, tenant: &str) -> Self {
        self.0.spec.tenant = tenant.into();
        self
    }

    pub fn provider(mut self, provider: &str) -> Self {
        self.0.spec.provider = ProviderName(provider.into());
        self
    }

    pub fn base_url(mut self, url: &str) -> Self {
        self.0.spec.base_url = Some(url.into());
        self
    }

    pub fn probe_path(mut self, path: &str) -> Self {
        self.0.spec.probe.path = Some(path.into());
        self
    }

    /// The managed Secret's name.
    pub fn target(mut self, secret: &str) -> Self {
        self.0.spec.target.name = Some(secret.into());
        self
    }

    /// A label on the managed Secret.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0.spec.target.labels.insert(key.into(), value.into());
        self
    }

    /// How often the token is probed (a Go duration).
    pub fn interval(mut self, interval: &str) -> Self {
        self.0.spec.probe.interval = Some(interval.into());
        self
    }

    /// Credential-side failures in a row before the credential is Degraded.
    /// How long one probe may take (a Go duration, at most 60s).
    pub fn timeout(mut self, timeout: &str) -> Self {
        self.0.spec.probe.timeout = Some(timeout.into());
        self
    }

    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.0.spec.probe.failure_threshold = n;
        self
    }

    /// A workload to restart when the token changes.
    pub fn restart(mut self, kind: WorkloadKind, name: &str) -> Self {
        self.0.spec.rollout_restart_targets.push(WorkloadRef {
            kind,
            name: name.into(),
        });
        self
    }

    /// Signs in with OAuth from the login Secret `login` instead of reading a token.
    pub fn oauth(mut self, login: &str) -> Self {
        self.0.spec.credential_ref = None;
        self.0.spec.oauth = Some(OAuthSpec {
            secret_ref: SecretNameRef { name: login.into() },
        });
        self
    }

    /// The managed Secret outlives the credential.
    pub fn retain(mut self) -> Self {
        self.0.spec.target.deletion_policy = DeletionPolicy::Retain;
        self
    }

    pub fn name(&self) -> &str {
        self.0.metadata.name.as_deref().unwrap_or_default()
    }

    /// The object as the API server takes it.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.0).expect("a credential serializes");
        v["apiVersion"] = "tenantcred.dev/v1alpha1".into();
        v["kind"] = "TenantApiCredential".into();
        v
    }
}

/// A condition's expected state, as [`Seen::condition`] answers it.
pub fn holds(status: Status, reason: Reason) -> Option<(Status, Option<Reason>)> {
    Some((status, Some(reason)))
}

/// What a credential's status says, read typed.
#[derive(Clone, Debug, Default)]
pub struct Seen(pub TenantApiCredentialStatus);

impl Seen {
    /// Reads the status of a credential as stored (`Null`: none yet).
    pub fn of(tac: &Value) -> Self {
        Self(serde_json::from_value(tac["status"].clone()).unwrap_or_default())
    }

    /// The condition's status and reason, typed.
    pub fn condition(&self, ty: Type) -> Option<(Status, Option<Reason>)> {
        tenantcred::decide::conditions::state(&self.0.conditions, ty)
    }

    /// `Ready=True` for this reason.
    pub fn ready_because(&self, reason: Reason) -> bool {
        self.condition(Type::Ready) == Some((Status::True, Some(reason)))
    }

    /// The condition is in this state for this reason.
    pub fn is(&self, ty: Type, status: Status, reason: Reason) -> bool {
        self.condition(ty) == Some((status, Some(reason)))
    }
}
