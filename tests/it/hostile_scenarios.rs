//! Issue 12: input written by a tenant the operator does not fully trust gets a clear answer and
//! never a silent retry loop, and the last good Secret stays as it was.

use serde_json::json;

use tenantcred_testkit::{Account, Answer, Backend, Harness, echo, eventually, scenarios};
use tenantcred_testkit::{Reason, Status, Type, credential, holds};

/// A 700 KB "token" would make a Secret over the API server's 1 MiB (it is stored twice).
async fn an_oversized_token_is_refused_and_never_sent_or_written(h: Harness) {
    let huge = "x".repeat(700 * 1024);
    h.source_secret("big-input", &huge).await;
    h.create_credential(h.local("big")).await;
    eventually(10, "InvalidToken", async || {
        h.seen("big").await.is(Type::Ready, Status::False, Reason::InvalidToken)
    })
    .await;
    let msg = h.tac("big").await["status"]["conditions"].to_string();
    assert!(msg.contains("716800 bytes") && msg.contains("8192"), "{msg}");
    assert_eq!(
        h.seen("big").await.condition(Type::Stalled),
        holds(Status::True, Reason::InvalidToken)
    );
    assert!(h.get("secrets", "big").await.is_none(), "never written");
    assert!(h.provider.seen().is_empty(), "never sent");
}

async fn a_service_account_token_is_never_a_source(h: Harness) {
    h.provider.default_answer(Answer::Ok);
    h.create(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "sa-input", "annotations": {"kubernetes.io/service-account.name": "default"}},
        "data": {"token": tenantcred_testkit::apiserver::b64(b"a-kubernetes-credential")}}),
    )
    .await;
    h.create_credential(h.local("sa")).await;
    eventually(10, "SourceNotAllowed", async || {
        h.seen("sa")
            .await
            .is(Type::Ready, Status::False, Reason::SourceNotAllowed)
    })
    .await;
    assert_eq!(
        h.seen("sa").await.condition(Type::Stalled),
        holds(Status::True, Reason::SourceNotAllowed)
    );
    assert!(h.provider.seen().is_empty(), "nothing sent anywhere");
    assert!(h.get("secrets", "sa").await.is_none());
}

/// A write the API server refuses (422) is a condition with the server's reason, and the Secret
/// keeps its last good content.
async fn a_secret_the_api_server_refuses_is_a_condition_not_a_loop(h: Harness) {
    h.ready_credential(h.local("c"), "good").await;
    h.edit_spec("c", |s| {
        s.target.labels = [("team".into(), "not a label value!".into())].into()
    })
    .await;
    eventually(10, "SecretRejected", async || {
        h.seen("c").await.is(Type::Ready, Status::False, Reason::SecretRejected)
    })
    .await;
    let msg = h.tac("c").await["status"]["conditions"].to_string();
    assert!(msg.contains("Invalid value"), "the server's reason: {msg}");
    assert_eq!(
        h.seen("c").await.condition(Type::Stalled),
        holds(Status::True, Reason::SecretRejected)
    );
    assert_eq!(
        h.managed_token("c").await.as_deref(),
        Some("good"),
        "last good Secret intact"
    );
    // Not retried in a loop: a few seconds bring no further write attempts.
    h.tap.reset();
    tenantcred_testkit::settle(1500).await;
    assert_eq!(h.tap.writes(), 0, "{:?}", h.tap.requests());
    // Fixing the spec recovers.
    h.edit_spec("c", |s| s.target.labels = [("team".into(), "sync".into())].into())
        .await;
    eventually(10, "Ready again", async || {
        h.seen("c").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
}

/// A tenant's baseUrl outside the owner's rules gets a condition naming the flag, and no request:
/// not for probes, not for the OAuth token endpoint, not to the cloud's metadata address.
async fn a_base_url_outside_the_allowlist_gets_no_request(h: Harness) {
    h.provider.default_answer(Answer::Ok);
    h.source_secret("elsewhere-input", "good").await;
    h.create_credential(h.local("elsewhere").base_url("https://api.tenant-chosen.example"))
        .await;
    h.source_secret("metadata-input", "good").await;
    h.create_credential(
        h.local("metadata")
            .provider("virtuous")
            .base_url("https://169.254.169.254"),
    )
    .await;
    h.create_credential(
        h.local("login")
            .provider("virtuous")
            .base_url("https://10.0.0.1")
            .oauth("login-secret"),
    )
    .await;
    for name in ["elsewhere", "metadata", "login"] {
        eventually(10, &format!("{name} BaseUrlNotAllowed"), async || {
            h.seen(name)
                .await
                .is(Type::Ready, Status::False, Reason::BaseUrlNotAllowed)
        })
        .await;
        assert_eq!(
            h.seen(name).await.condition(Type::Stalled),
            holds(Status::True, Reason::BaseUrlNotAllowed)
        );
        let msg = h.tac(name).await["status"]["conditions"].to_string();
        assert!(
            msg.contains("--allowed-host") && msg.contains("nothing was sent"),
            "{msg}"
        );
        assert!(h.get("secrets", name).await.is_none(), "{name}: no Secret");
    }
    let msg = h.tac("metadata").await["status"]["conditions"].to_string();
    assert!(msg.contains("169.254.169.254 is not a public address"), "{msg}");
    let msg = h.tac("elsewhere").await["status"]["conditions"].to_string();
    assert!(msg.contains("provider generic has no documented host"), "{msg}");
    assert!(h.provider.seen().is_empty(), "nothing sent anywhere");
    // Pointing it where the owner allows recovers.
    let allowed = h.provider.base_url.clone();
    h.edit_spec("elsewhere", |s| s.base_url = Some(allowed.clone())).await;
    eventually(10, "Ready once allowed", async || {
        h.seen("elsewhere")
            .await
            .is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
}

/// An allowed name is not an allowed address: a name that resolves to loopback is refused when
/// the connection is made, until the owner allows the address itself.
async fn a_name_that_resolves_to_a_private_address_is_refused_at_connect_time(mut h: Harness) {
    use tenantcred::decide::egress::Egress;
    let pattern = |p: String| p.parse().expect("pattern");
    let port = url::Url::parse(&h.provider.base_url)
        .ok()
        .and_then(|u| u.port())
        .expect("the simulator's port");
    h.restart_controller_with(Egress::new(vec![pattern(format!("localhost:{port}"))], true));
    h.provider.default_answer(Answer::Ok);
    let by_name = h.provider.base_url.replace("127.0.0.1", "localhost");
    h.source_secret("local-input", "good").await;
    h.create_credential(h.local("local").base_url(&by_name)).await;
    eventually(15, "refused at connect time", async || {
        h.seen("local")
            .await
            .is(Type::Ready, Status::False, Reason::BaseUrlNotAllowed)
    })
    .await;
    let msg = h.tac("local").await["status"]["conditions"].to_string();
    assert!(
        msg.contains(&format!(
            "localhost:{port} resolves only to addresses that are not public"
        )) && msg.contains("127.0.0.1"),
        "{msg}"
    );
    assert!(h.provider.seen().is_empty(), "nothing sent");
    h.restart_controller_with(Egress::new(
        vec![
            pattern(format!("localhost:{port}")),
            pattern(format!("127.0.0.1:{port}")),
        ],
        true,
    ));
    eventually(20, "Ready once the address is allowed", async || {
        h.seen("local").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
}

/// What a reader of this test's events sees.
async fn event_messages(h: &Harness) -> Vec<String> {
    h.list("events")
        .await
        .iter()
        .map(|e| e["message"].to_string())
        .collect()
}

/// A user name or password in `baseUrl` would travel as a second `Authorization` header and be
/// shown wherever the URL is: the real server's schema refuses it, and so does the operator
/// (where no schema runs), without quoting it and without sending anything.
async fn a_base_url_with_a_user_name_or_password_is_refused_and_never_shown(h: Harness) {
    h.provider.default_answer(Answer::Ok);
    h.source_secret("ui-input", "good").await;
    let with_userinfo = h.provider.base_url.replace("://", "://svc:hunter2@");
    if h.backend == Backend::Real {
        let err = h
            .apply(
                json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
                "metadata": {"name": "ui"}, "spec": {"tenant": "acme", "provider": "generic",
                "baseUrl": with_userinfo, "probe": {"path": "/probe"}, "credentialRef": {"name": "ui-input"}}}),
            )
            .await
            .expect_err("the schema refuses user info in baseUrl");
        assert!(err.contains("must not hold a user name or password"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        // A credential without a baseUrl (null, as some tools write it) still passes the rule.
        h.credential("nb", "raise", json!({"baseUrl": null, "probe": null}))
            .await;
        h.skip("user info cannot slip past the real server's schema: the operator's refusal is the double's");
        return;
    }
    h.create_credential(h.local("ui").base_url(&with_userinfo)).await;
    eventually(10, "InvalidSpec", async || {
        h.seen("ui").await.is(Type::Ready, Status::False, Reason::InvalidSpec)
    })
    .await;
    assert_eq!(
        h.seen("ui").await.condition(Type::Stalled),
        holds(Status::True, Reason::InvalidSpec)
    );
    let tac = h.tac("ui").await.to_string();
    assert!(tac.matches("hunter2").count() == 1, "only in the spec itself: {tac}");
    let msg = h.tac("ui").await["status"]["conditions"].to_string();
    assert!(
        msg.contains("user name or password") && !msg.contains("hunter2"),
        "{msg}"
    );
    let events = event_messages(&h).await;
    assert!(events.iter().all(|m| !m.contains("hunter2")), "{events:?}");
    assert!(h.get("secrets", "ui").await.is_none(), "no Secret");
    assert!(h.provider.seen().is_empty(), "nothing sent");
}

/// A token endpoint that repeats the form it was sent (password, code, refresh token, user name)
/// in every encoding, in its body and its `Content-Type`, gets its refusal shown only by its
/// shapes, in the status and in events, naming the provider by its definition.
async fn a_token_endpoint_that_echoes_its_form_is_only_summarized(h: Harness) {
    let (password, code, refresh) = ("Wr0ng p&ss=word/é", "424242", "rt-stale-0123456789");
    let user = "dev@example.org";
    h.provider.set_account(Account {
        username: user.into(),
        password: "the-right-one".into(),
        expires_in: 3600,
        echo_form: true,
        ..Account::default()
    });
    let login = [
        ("username", user),
        ("password", password),
        ("otp", code),
        ("refresh_token", refresh),
    ];
    h.secret("login", &login).await;
    h.create_credential(
        credential("v")
            .provider("virtuous")
            .base_url(&h.provider.base_url)
            .oauth("login"),
    )
    .await;
    eventually(10, "InvalidGrant", async || {
        h.seen("v").await.is(Type::Ready, Status::False, Reason::InvalidGrant)
    })
    .await;
    let grants = h.provider.account().map(|a| a.grants).unwrap_or_default();
    assert_eq!(
        grants,
        ["refresh_token(rejected)", "password+otp"],
        "both grants were echoed"
    );
    let status = h.tac("v").await["status"].to_string();
    assert!(
        status.contains("virtuous refused the password grant (HTTP 400, a non-standard error code, application/json, "),
        "the shapes, the definition's name: {status}"
    );
    h.expect_events("InvalidGrant", 1).await;
    let shown = format!("{status} {:?}", event_messages(&h).await);
    let leaks = echo::leaks(&shown, &[password, code, refresh, user]);
    assert!(leaks.is_empty(), "{leaks:?} in {shown}");
}

/// A probe target that repeats the token in every encoding (body, `Content-Type`,
/// `WWW-Authenticate`) never gets it shown in the status or in events.
async fn a_probe_target_that_echoes_the_token_never_gets_it_shown(h: Harness) {
    let token = "echo-T0ken/with+odd=chars@42";
    h.provider.answer(token, Answer::Echo);
    h.source_secret("e-input", token).await;
    h.create_credential(h.local("e").failure_threshold(1)).await;
    eventually(10, "Unauthorized", async || {
        h.seen("e").await.is(Type::Degraded, Status::True, Reason::Unauthorized)
    })
    .await;
    h.expect_events("Unauthorized", 1).await;
    assert_eq!(h.provider.hits(token), 1, "the token was sent and echoed");
    let shown = format!("{} {:?}", h.tac("e").await["status"], event_messages(&h).await);
    let leaks = echo::leaks(&shown, &[token]);
    assert!(leaks.is_empty(), "{leaks:?} in {shown}");
}

/// Issue 36: a probe path with a line break, a terminal escape or a line separator would reach
/// the request line and every terminal that shows the status. The real server's schema refuses
/// it; where none ran (the double), the operator does (InvalidSpec), shows it escaped, and sends
/// nothing.
async fn a_probe_path_with_control_characters_is_refused_and_shown_escaped(h: Harness) {
    h.provider.default_answer(Answer::Ok);
    h.source_secret("cc-input", "good").await;
    let path = "/probe\r\nX-Injected: 1\u{1b}[2J\u{85}\u{2028}";
    if h.backend == Backend::Real {
        let err = h
            .apply(
                json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
                "metadata": {"name": "cc"}, "spec": {"tenant": "acme", "provider": "generic",
                "baseUrl": h.provider.base_url, "probe": {"path": path}, "credentialRef": {"name": "cc-input"}}}),
            )
            .await
            .expect_err("the schema refuses control characters in probe.path");
        assert!(err.contains("probe.path must not hold control characters"), "{err}");
        assert!(!err.contains("X-Injected"), "the value is not echoed: {err}");
        h.skip("control characters cannot slip past the real server's schema: the operator's refusal is the double's");
        return;
    }
    h.create_credential(h.local("cc").probe_path(path)).await;
    eventually(10, "InvalidSpec", async || {
        h.seen("cc").await.is(Type::Ready, Status::False, Reason::InvalidSpec)
    })
    .await;
    let conditions = &h.tac("cc").await["status"]["conditions"];
    let ready = conditions
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .expect("Ready");
    let msg = ready["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("spec.probe.path \"/probe\\r\\nX-Injected: 1\\u{1b}[2J\\u{85}\\u{2028}\""),
        "{msg}"
    );
    h.expect_events("InvalidSpec", 1).await;
    let events = h.list("events").await;
    let printed = events.iter().map(|e| e["message"].as_str().unwrap_or_default());
    for shown in std::iter::once(msg).chain(printed) {
        assert!(!tenantcred::decide::text::has_control(shown), "raw: {shown:?}");
    }
    assert!(h.get("secrets", "cc").await.is_none(), "no Secret");
    assert!(h.provider.seen().is_empty(), "nothing sent");
}

/// Found by the hostile-tenant review: the client puts a Secret's name into the request path as
/// written, so `credentialRef.name: "?watch=true"` turned the read of one Secret into a watch of
/// the namespace's Secrets that the API server held open for 30 to 60 minutes (a reconcile
/// worker stuck, nothing said). Every name a spec gives is an object name, by the schema and by
/// the operator.
async fn a_name_that_would_rewrite_the_request_is_refused(h: Harness) {
    let names = [
        ("credentialRef", json!({"credentialRef": {"name": "?watch=true"}})),
        ("target", json!({"target": {"name": "../configmaps/x"}})),
        (
            "oauth",
            json!({"credentialRef": null, "oauth": {"secretRef": {"name": "x#y"}}}),
        ),
        (
            "restart",
            json!({"rolloutRestartTargets": [{"kind": "Deployment", "name": "a/b"}]}),
        ),
    ];
    for (i, (field, extra)) in names.iter().enumerate() {
        let name = format!("rewrite{i}");
        let mut spec = json!({"tenant": "acme", "provider": "virtuous", "baseUrl": h.provider.base_url,
            "probe": {"path": "/probe"}, "credentialRef": {"name": "src"}});
        json_patch::merge(&mut spec, extra);
        let obj = json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
            "metadata": {"name": name}, "spec": spec});
        if h.backend == Backend::Real {
            let err = h.apply(obj).await.expect_err("the schema refuses it");
            assert!(err.contains("should match"), "{field}: {err}");
            continue;
        }
        h.create(obj).await;
        eventually(10, &format!("{field}: InvalidSpec"), async || {
            h.seen(&name).await.is(Type::Ready, Status::False, Reason::InvalidSpec)
        })
        .await;
        let msg = h.tac(&name).await["status"]["conditions"].to_string();
        assert!(msg.contains("is not an object name"), "{field}: {msg}");
    }
    if h.backend == Backend::Double {
        assert_eq!(h.tap.count("get", "secrets"), 0, "nothing read: {:?}", h.tap.requests());
        assert!(h.provider.seen().is_empty(), "nothing sent");
    }
}

scenarios!(
    a_name_that_would_rewrite_the_request_is_refused,
    a_probe_path_with_control_characters_is_refused_and_shown_escaped,
    a_base_url_outside_the_allowlist_gets_no_request,
    a_name_that_resolves_to_a_private_address_is_refused_at_connect_time,
    an_oversized_token_is_refused_and_never_sent_or_written,
    a_service_account_token_is_never_a_source,
    a_secret_the_api_server_refuses_is_a_condition_not_a_loop,
    a_base_url_with_a_user_name_or_password_is_refused_and_never_shown,
    a_token_endpoint_that_echoes_its_form_is_only_summarized,
    a_probe_target_that_echoes_the_token_never_gets_it_shown,
);
