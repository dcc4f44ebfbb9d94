//! The probe against a real HTTP server on 127.0.0.1 behaving like each provider.

use std::time::Duration;

use tenantcred::crd::ProbeResult;
use tenantcred::decide::error_body::{MediaType, OAuthError};
use tenantcred::decide::token::Token;
use tenantcred::decide::verdict::{Transport, classify};
use tenantcred::outbound::ProviderClient;

use tenantcred_testkit::{Answer, Provider};

fn generic() -> std::sync::Arc<tenantcred::decide::provider::Profile> {
    tenantcred::decide::provider::builtin::get("generic").expect("built in")
}

/// The operator's HTTP client, with the tests' egress rules (127.0.0.1 over plain http).
fn prober() -> ProviderClient {
    let unfenced = std::sync::Arc::new(tenantcred::fence::Fence::unfenced());
    ProviderClient::new(std::sync::Arc::new(tenantcred_testkit::local_egress()), unfenced).expect("client")
}

async fn probe(p: &Provider, token: &str, timeout: Duration) -> tenantcred::decide::verdict::ProbeOutcome {
    let prober = prober();
    prober
        .probe(
            &format!("{}/api/Organization/Current", p.base_url),
            &Token::new(token),
            timeout,
            &tenantcred::decide::provider::builtin::get("virtuous").expect("built in"),
        )
        .await
        .expect("an unfenced prober sends")
}

#[tokio::test]
async fn every_provider_answer_gets_its_verdict() {
    let p = Provider::start().await;
    let cases = [
        ("valid", Answer::Ok, ProbeResult::Valid),
        ("json401", Answer::UnauthorizedJson, ProbeResult::Unauthorized),
        ("text401", Answer::UnauthorizedText, ProbeResult::Unauthorized),
        ("nope", Answer::Forbidden, ProbeResult::Forbidden),
        (
            "limited",
            Answer::RateLimited { retry_after: 120 },
            ProbeResult::RateLimited,
        ),
        (
            "limited2",
            Answer::RateLimitedHeaders {
                reset_at: 4_102_444_800,
            },
            ProbeResult::RateLimited,
        ),
        ("err500", Answer::Status(500), ProbeResult::Unavailable),
        ("err503", Answer::Status(503), ProbeResult::Unavailable),
    ];
    for (token, answer, want) in cases {
        p.answer(token, answer);
        let o = probe(&p, token, Duration::from_secs(5)).await;
        assert_eq!(classify(&o), want, "{token}: {o:?}");
    }
    // An error answer is summarized by its shapes; its words are never carried.
    let text = probe(&p, "text401", Duration::from_secs(5)).await;
    let summary = text.error_body.expect("a 401 is summarized");
    let denied = "Authorization has been denied for this request.";
    assert_eq!(
        (summary.status, summary.len, summary.oauth_error),
        (401, denied.len(), None)
    );
    assert_eq!(summary.media_type, Some(MediaType::Text));
    assert!(!summary.to_string().contains("denied"), "{summary}");
    let json = probe(&p, "json401", Duration::from_secs(5)).await;
    let summary = json.error_body.expect("a 401 is summarized");
    assert_eq!(
        summary.oauth_error,
        Some(OAuthError::Other),
        "\"Unauthorized\" is no RFC 6749 code"
    );
    assert!(probe(&p, "valid", Duration::from_secs(5)).await.error_body.is_none());
    let limited = probe(&p, "limited", Duration::from_secs(5)).await;
    let wait = limited.retry_after.expect("Retry-After read").as_second() - jiff::Timestamp::now().as_second();
    assert!((110..=121).contains(&wait), "{wait}");
    let limited2 = probe(&p, "limited2", Duration::from_secs(5)).await;
    assert_eq!(limited2.rate_limit.remaining, Some(0));
    // A reset in 2100 holds the key back a day at most (then one probe asks again).
    let day_ahead = jiff::Timestamp::now().as_second() + 86_400;
    let until = limited2.back_off_until().expect("a reset").as_second();
    assert!((day_ahead - 10..=day_ahead).contains(&until), "{until}");
}

#[tokio::test]
async fn requests_carry_bearer_and_user_agent() {
    let p = Provider::start().await;
    p.answer("abc", Answer::Ok);
    probe(&p, "abc", Duration::from_secs(5)).await;
    let seen = p.seen();
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer abc"));
    assert!(
        seen[0]
            .user_agent
            .as_deref()
            .is_some_and(|u| u.starts_with("tenantcred/"))
    );
    assert_eq!(seen[0].path, "/api/Organization/Current");
}

#[tokio::test]
async fn slow_answers_time_out_and_refused_connections_are_unavailable() {
    let p = Provider::start().await;
    p.answer("slow", Answer::Slow(Duration::from_secs(3)));
    let o = probe(&p, "slow", Duration::from_millis(300)).await;
    assert_eq!(o.transport, Transport::Timeout);
    assert_eq!(classify(&o), ProbeResult::Unavailable);
    // A port nobody listens on: bind, learn the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let prober = prober();
    let o = prober
        .probe(
            &format!("http://127.0.0.1:{port}/x"),
            &Token::new("t"),
            Duration::from_secs(2),
            &generic(),
        )
        .await
        .expect("an unfenced prober sends");
    assert!(matches!(o.transport, Transport::Failed(_)), "{o:?}");
    assert_eq!(classify(&o), ProbeResult::Unavailable);
}

#[tokio::test]
async fn redirects_are_never_followed() {
    use axum::Router;
    use axum::response::Redirect;
    let target = Provider::start().await;
    target.answer("secret-token", Answer::Ok);
    let to = format!("{}/stolen", target.base_url);
    let app = Router::new().fallback(move || {
        let to = to.clone();
        async move { Redirect::temporary(&to) }
    });
    let addr = tenantcred_testkit::serve(app).await;
    let prober = prober();
    let o = prober
        .probe(
            &format!("http://{addr}/probe"),
            &Token::new("secret-token"),
            Duration::from_secs(2),
            &generic(),
        )
        .await
        .expect("an unfenced prober sends");
    assert_eq!(classify(&o), ProbeResult::Unavailable);
    assert!(target.seen().is_empty(), "the token never reached the other host");
}

/// An endless body: a reader that does not stop at its bound would wait for the timeout (or run
/// out of memory) instead of returning the answer.
fn endless(status: u16) -> axum::Router {
    use axum::body::Body;
    use axum::response::Response;
    axum::Router::new().fallback(move || async move {
        let chunk = bytes_of(8 * 1024);
        let stream = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
        Response::builder()
            .status(status)
            .body(Body::from_stream(stream))
            .expect("response")
    })
}

fn bytes_of(n: usize) -> axum::body::Bytes {
    axum::body::Bytes::from(vec![b'x'; n])
}

#[tokio::test]
async fn responses_are_read_to_64_kib_and_no_further() {
    let addr = tenantcred_testkit::serve(endless(401)).await;
    let prober = prober();
    let o = prober
        .probe(
            &format!("http://{addr}/probe"),
            &Token::new("t"),
            Duration::from_secs(20),
            &generic(),
        )
        .await
        .expect("an unfenced prober sends");
    assert_eq!(o.transport, Transport::Answered(401), "answered, not timed out: {o:?}");

    let addr = tenantcred_testkit::serve(endless(200)).await;
    let answer = prober
        .post_form(
            &format!("http://{addr}/Token"),
            &token_request(),
            Duration::from_secs(20),
            &generic(),
        )
        .await
        .expect("an unfenced prober sends");
    assert_eq!(answer.transport, Transport::Answered(200));
    assert_eq!(
        answer.body.len(),
        tenantcred::outbound::BODY_LIMIT,
        "read to the bound, not beyond"
    );
}

/// A replica that does not lead sends nothing to providers: not a probe, not a token request.
#[tokio::test]
async fn a_fenced_prober_sends_nothing() {
    let p = Provider::start().await;
    p.answer("t", Answer::Ok);
    let closed = std::sync::Arc::new(tenantcred::fence::Fence::default());
    let prober = ProviderClient::new(std::sync::Arc::new(tenantcred_testkit::local_egress()), closed).expect("client");
    let probe = prober
        .probe(
            &format!("{}/probe", p.base_url),
            &Token::new("t"),
            Duration::from_secs(2),
            &generic(),
        )
        .await;
    assert!(probe.is_err());
    let grant = prober
        .post_form(
            &format!("{}/Token", p.base_url),
            &token_request(),
            Duration::from_secs(2),
            &generic(),
        )
        .await;
    assert!(grant.is_err());
    assert!(p.seen().is_empty(), "{:?}", p.seen());
}

/// A host that answers `head` at once and then trickles the body, one byte every 100 ms, for far
/// longer than a test waits.
async fn trickling(head: &'static str) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The request first, as a server reads it.
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if conn.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for _ in 0..100_000 {
                    if conn.write_all(b"x").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
    });
    (addr, server)
}

fn token_request() -> tenantcred::decide::oauth::TokenRequest {
    tenantcred::decide::oauth::TokenRequest::of_form(
        tenantcred::crd::oauth::GrantType::Password,
        [("grant_type", "password")],
    )
}

/// A host that answers its headers at once and then trickles the body: the deadline covers the
/// whole exchange, body included, not only the wait for headers (issue 36). One timer ends it,
/// so the outcome is always the same: a probe keeps the status line it was answered (the body
/// summarized as far as it came); a token request whose body is the answer timed out; a 429
/// keeps its status and its Retry-After, whose body tells nothing anyway.
#[tokio::test]
async fn the_deadline_covers_a_body_that_never_ends() {
    let (addr, server) =
        trickling("HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain\r\ncontent-length: 100000\r\n\r\n").await;
    // The body would take 10,000 s; a deadline of 1 s ends it (the 30 s bound is liveness only:
    // without the deadline this waits for the whole body).
    let prober = prober();
    let (url, token, profile) = (format!("http://{addr}/probe"), Token::new("slow-body"), generic());
    let probe = prober.probe(&url, &token, Duration::from_secs(1), &profile);
    let o = tokio::time::timeout(Duration::from_secs(30), probe)
        .await
        .expect("the deadline ended the exchange")
        .expect("an unfenced prober sends");
    assert_eq!(o.transport, Transport::Answered(401), "{o:?}");
    assert!(
        o.error_body.is_some(),
        "the body as far as it came is summarized: {o:?}"
    );

    let (token_url, form) = (format!("http://{addr}/Token"), token_request());
    let grant = prober.post_form(&token_url, &form, Duration::from_secs(1), &profile);
    let answer = tokio::time::timeout(Duration::from_secs(30), grant)
        .await
        .expect("the deadline ended the exchange")
        .expect("an unfenced prober sends");
    assert_eq!(answer.transport, Transport::Timeout);
    assert!(answer.body.is_empty(), "a cut answer is not read as one");
    server.abort();

    let (addr, server) = trickling(
        "HTTP/1.1 429 Too Many Requests\r\nretry-after: 120\r\ncontent-type: text/plain\r\ncontent-length: 100000\r\n\r\n",
    )
    .await;
    let token_url = format!("http://{addr}/Token");
    let grant = prober.post_form(&token_url, &form, Duration::from_secs(1), &profile);
    let answer = tokio::time::timeout(Duration::from_secs(30), grant)
        .await
        .expect("the deadline ended the exchange")
        .expect("an unfenced prober sends");
    assert_eq!(answer.transport, Transport::Answered(429));
    assert!(answer.back_off_until.is_some(), "its Retry-After is honoured");
    server.abort();
}
