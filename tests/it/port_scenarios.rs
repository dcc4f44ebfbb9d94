//! Issue 36, item 3: an owner's port is honoured at connect time too. `--allowed-host
//! 127.0.0.1:A` allows 127.0.0.1 on port A only, whatever name resolves to it and whichever form
//! of the address a pattern is written in: a provider host on another port of the same machine
//! gets nothing.

use serde_json::json;

use tenantcred::decide::egress::Egress;
use tenantcred_testkit::{Answer, Harness, Provider, eventually, scenarios};
use tenantcred_testkit::{Reason, Status, Type};

fn port_of(sim: &Provider) -> u16 {
    url::Url::parse(&sim.base_url)
        .ok()
        .and_then(|u| u.port())
        .expect("the simulator's port")
}

fn egress(patterns: &[String]) -> Egress {
    Egress::new(
        patterns.iter().map(|p| p.parse().expect("a valid pattern")).collect(),
        true,
    )
}

/// An `ApiProvider` documented at `localhost` on both simulators' ports (names resolving to
/// loopback: allowed as names, never as addresses), and credentials on each port. The owner
/// allows the name on both ports (plain http to a documented host needs the owner too) and the
/// address on port A only, in the `form` given.
async fn a_port_the_owner_did_not_name_gets_nothing_whatever_resolves_to_it(mut h: Harness) {
    let b = Provider::start().await;
    let (port_a, port_b) = (port_of(&h.provider), port_of(&b));
    let provider = format!("{}-ports", h.ns);
    h.apply_cluster(
        "apiproviders",
        &json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "ApiProvider",
            "metadata": {"name": provider},
            "spec": {"hosts": [format!("localhost:{port_a}"), format!("localhost:{port_b}")],
                     "probe": {"path": "/probe"}, "auth": {"type": "Bearer"}}}),
    )
    .await;
    h.provider.default_answer(Answer::Ok);
    b.default_answer(Answer::Ok);
    let names = [format!("localhost:{port_a}"), format!("localhost:{port_b}")];
    let forms = [
        vec![format!("127.0.0.1:{port_a}")],
        vec![format!("[::ffff:127.0.0.1]:{port_a}"), format!("[::1]:{port_a}")],
    ];
    for (round, form) in forms.iter().enumerate() {
        h.restart_controller_with(egress(&[names.to_vec(), form.clone()].concat()));
        let (on_a, on_b) = (format!("on-a-{round}"), format!("on-b-{round}"));
        for (name, port) in [(&on_a, port_a), (&on_b, port_b)] {
            h.source_secret(&format!("{name}-input"), "good").await;
            h.create(
                json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
                "metadata": {"name": name},
                "spec": {"tenant": "acme", "provider": provider, "baseUrl": format!("http://localhost:{port}"),
                         "probe": {"failureThreshold": 1}, "credentialRef": {"name": format!("{name}-input")}}}),
            )
            .await;
        }
        eventually(20, &format!("{form:?}: port B refused"), async || {
            h.seen(&on_b)
                .await
                .is(Type::Ready, Status::False, Reason::BaseUrlNotAllowed)
        })
        .await;
        let msg = h.tac(&on_b).await["status"]["conditions"].to_string();
        assert!(
            msg.contains(&format!("localhost:{port_b} resolves only to addresses"))
                && msg.contains(&format!("not allowed on port {port_b}"))
                && msg.contains("nothing was sent"),
            "{msg}"
        );
        eventually(20, &format!("{form:?}: port A works"), async || {
            h.seen(&on_a).await.is(Type::Ready, Status::True, Reason::TokenValid)
        })
        .await;
        assert!(b.seen().is_empty(), "{form:?}: nothing reached port B");
    }
    h.delete_cluster("apiproviders", &provider).await;
}

scenarios!(a_port_the_owner_did_not_name_gets_nothing_whatever_resolves_to_it);

/// One `ProviderClient` for every port: each request goes through the client of its URL's port,
/// whose resolver judges `localhost`'s addresses for that port, the probe and the token
/// endpoint's POST alike, in any order.
#[tokio::test]
async fn the_provider_client_judges_each_address_for_the_port_it_connects_to() {
    use std::sync::Arc;
    use std::time::Duration;
    use tenantcred::decide::token::Token;
    use tenantcred::decide::verdict::Transport;

    let (a, b) = (Provider::start().await, Provider::start().await);
    a.default_answer(Answer::Ok);
    b.default_answer(Answer::Ok);
    let (port_a, port_b) = (port_of(&a), port_of(&b));
    let client = tenantcred::outbound::ProviderClient::new(
        Arc::new(egress(&[format!("[::ffff:127.0.0.1]:{port_a}")])),
        Arc::new(tenantcred::fence::Fence::unfenced()),
    )
    .expect("client");
    let generic = tenantcred::decide::provider::builtin::get("generic").expect("generic");
    let token = Token::new("good");
    for port in [port_a, port_b, port_a, port_b] {
        let url = format!("http://localhost:{port}/probe");
        let probed = client
            .probe(&url, &token, Duration::from_secs(5), &generic)
            .await
            .expect("unfenced");
        let posted = client
            .post_form(
                &url,
                &tenantcred::decide::oauth::TokenRequest::of_form(
                    tenantcred::crd::oauth::GrantType::Password,
                    [("grant_type", "x")],
                ),
                Duration::from_secs(5),
                &generic,
            )
            .await
            .expect("unfenced");
        for transport in [probed.transport, posted.transport] {
            match transport {
                Transport::Answered(200) if port == port_a => {}
                Transport::NotAllowed(m) if port == port_b => {
                    assert!(
                        m.contains(&format!("localhost:{port_b}")) && m.contains("127.0.0.1"),
                        "{m}"
                    );
                }
                other => panic!("port {port}: {other:?}"),
            }
        }
    }
    assert!(b.seen().is_empty(), "nothing reached port B");
    assert_eq!(a.seen().len(), 4, "port A answered every request");
}
