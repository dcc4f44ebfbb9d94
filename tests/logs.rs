//! Tokens never reach the logs, even at trace level with every dependency logging, nor does any
//! form of a secret an echoing provider repeats. A binary of its own: the subscriber is
//! process-global, so no other test's threads can hide log lines.
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;

use tenantcred_testkit::{Account, Answer, Backend, Harness, Reason, Status, Type, credential, echo, eventually};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_token_in_trace_logs() {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this binary");

    let secrets = [
        "secret-valid-AAAA",
        "secret-revoked-BBBB",
        "secret-rotated-CCCC",
        "cs_live_secretDDDD",
    ];
    let h = Harness::start(Backend::Double, "no_token_in_trace_logs")
        .await
        .expect("the double always starts");
    h.provider.answer(secrets[0], Answer::Ok);
    h.provider.answer(secrets[1], Answer::UnauthorizedText);
    h.provider.answer(secrets[2], Answer::Ok);
    h.source_secret("a-input", secrets[0]).await;
    h.credential("a", "generic", json!({})).await;
    h.source_secret("b-input", secrets[1]).await;
    h.credential("b", "generic", json!({})).await;
    h.source_secret("c-input", &format!(" {}", secrets[3])).await;
    h.credential("c", "charitystack", json!({})).await;
    eventually(10, "a ready", async || {
        h.seen("a").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
    eventually(10, "b probed", async || {
        h.tac("b").await["status"]["consecutiveFailures"] == 1
    })
    .await;
    eventually(10, "c invalid", async || {
        h.seen("c").await.is(Type::Ready, Status::False, Reason::InvalidToken)
    })
    .await;
    h.source_secret("a-input", secrets[2]).await;
    eventually(10, "a rotated", async || h.provider.hits(secrets[2]) == 1).await;

    // A probe target and a token endpoint that repeat every secret sent, in every encoding.
    let echoed = [
        "echoed-token/EEEE+0123456789",
        "Echoed p@ss wörd/+",
        "otp-code-9876543",
        "rt-echoed-0123456789",
    ];
    h.provider.answer(echoed[0], Answer::Echo);
    h.source_secret("e-input", echoed[0]).await;
    h.credential("e", "generic", json!({"probe": {"failureThreshold": 1}}))
        .await;
    h.provider.set_account(Account {
        username: "ops@acme.example".into(),
        password: "the-right-one".into(),
        expires_in: 3600,
        echo_form: true,
        ..Account::default()
    });
    let login = [
        ("username", "ops@acme.example"),
        ("password", echoed[1]),
        ("otp", echoed[2]),
        ("refresh_token", echoed[3]),
    ];
    h.secret("login", &login).await;
    h.create_credential(
        credential("v")
            .provider("virtuous")
            .base_url(&h.provider.base_url)
            .oauth("login"),
    )
    .await;
    eventually(10, "e degraded", async || {
        h.seen("e").await.is(Type::Degraded, Status::True, Reason::Unauthorized)
    })
    .await;
    eventually(10, "v refused", async || {
        h.seen("v").await.is(Type::Ready, Status::False, Reason::InvalidGrant)
    })
    .await;
    drop(h);

    let logs = String::from_utf8_lossy(&out.0.lock().unwrap_or_else(|e| e.into_inner())).to_string();
    assert!(
        logs.contains("probed") && logs.contains("tenantcred::controller"),
        "debug logs were captured ({} bytes)",
        logs.len()
    );
    for s in secrets {
        assert!(!logs.contains(s), "token {s} leaked into the logs");
    }
    let leaks = echo::leaks(&logs, &echoed);
    assert!(leaks.is_empty(), "echoed secrets in the logs: {leaks:?}");
}
