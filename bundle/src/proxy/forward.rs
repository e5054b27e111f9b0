//! One request through the proxy: decide, rewrite, send upstream, stream the answer back.

use std::sync::Arc;

use bottle_contract::bundle_config::DlpMode;
use http::header::{ACCEPT_ENCODING, CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::proxy::audit::{AuditEvent, AuditedBody, Outcome, Pending, ProxyBody, full};
use crate::proxy::policy::{AMBIGUOUS_FORMS, Decision, DenyReason, RequestFacts};
use crate::proxy::upstream::{self, FailureClass, UpstreamError};
use crate::proxy::{Shared, dlp, labels, ws};

/// Where a request goes: the CONNECT target inside a tunnel, or the absolute-form authority.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Lower-case, without a trailing dot or IPv6 brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
}

/// Never forwarded (the contract's list, which credential headers are also checked against).
use bottle_contract::route::HOP_BY_HOP_HEADERS as HOP_BY_HOP;

/// Handles one request for `target`; never fails (errors become responses).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    target: Target,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let mut event = AuditEvent::new(
        req.method().to_string(),
        target.host.clone(),
        target.port,
        req.uri().path().to_owned(),
    );
    if !authority_matches(&req, &target) {
        return Ok(deny(&shared, event, DenyReason::HostMismatch, &target));
    }
    let policy = shared.policy.load_full();
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let facts = RequestFacts {
        host: &target.host,
        port: target.port,
        tls: target.tls,
        path: req.uri().path(),
        query: req.uri().query(),
        content_type,
    };
    // Known secrets, first (a request carrying one is refused whatever else is wrong with
    // it, and the refusal names the variable): the request head now, the body as it streams.
    let secrets =
        (shared.dlp != DlpMode::Off && !policy.secrets.is_empty()).then(|| policy.secrets.clone());
    if let Some(set) = &secrets {
        let own = policy
            .route_for(&target.host, target.port, target.tls)
            .and_then(|i| policy.routes[i].token_ref.as_deref());
        // The audit log names variables, never values: a path or host carrying one is masked.
        let mut masked_path = event.path.clone().into_bytes();
        if set.mask(&mut masked_path) > 0 {
            event.path = String::from_utf8_lossy(&masked_path).into_owned();
        }
        if set.find_in_host(&event.host).is_some() {
            event.host = "*".repeat(event.host.len());
        }
        if let Some((hit, place)) = head_secret(set, &req, &target, own) {
            event.secret = Some(format!("{} ({}, in the {place})", hit.name, hit.encoding));
            if shared.dlp == DlpMode::Block {
                discard_body(req).await;
                return Ok(secret_denial(&shared, event, &hit, place, &target));
            }
            tracing::warn!(host = %target.host, secret = %hit.name, %place, "a request carries a bottle secret (dlp: log)");
        }
    }
    // A wildcard-chosen label shaped like a credential, before anything is looked up
    // (after the known secrets, whose refusal names the variable).
    if shared.dlp != DlpMode::Off
        && let Some(suspicion) =
            labels::suspicious_host(&policy, &target.host, target.port, target.tls)
    {
        event.host = labels::masked(&event.host);
        event.secret = Some(format!("credential-shaped host label: {}", suspicion.why));
        if shared.dlp == DlpMode::Block {
            discard_body(req).await;
            return Ok(label_denial(&shared, event, &suspicion));
        }
        tracing::warn!(why = %suspicion.why, "a host label looks like a credential (dlp: log)");
    }
    let allowed = match policy.decide(&facts) {
        Decision::Allow(allowed) => allowed,
        Decision::Deny(reason) => {
            if let Some(i) = policy.route_for(&target.host, target.port, target.tls) {
                event.route = Some(policy.routes[i].label());
            }
            return Ok(deny(&shared, event, reason, &target));
        }
    };
    let route = &policy.routes[allowed.route];
    event.route = Some(route.label());
    event.decision = "allow";
    event.path = allowed.path.clone();

    if let Some(set) = &secrets {
        let mut masked_path = event.path.clone().into_bytes();
        if set.mask(&mut masked_path) > 0 {
            event.path = String::from_utf8_lossy(&masked_path).into_owned();
        }
        if let Some(encoding) = compressed_body(&req) {
            if shared.dlp == DlpMode::Block {
                event.reason = Some("compressed-body".into());
                event.decision = "deny";
                event.status = StatusCode::FORBIDDEN.as_u16();
                shared.audit.record(&event);
                discard_body(req).await;
                return Ok(text_response(
                    StatusCode::FORBIDDEN,
                    format!(
                        "claude-bottle egress proxy: the request body to {host} is compressed \
                         (Content-Encoding: {encoding}), and this bottle's proxy looks through \
                         every request body for the bottle's secrets, so it refuses bodies it \
                         cannot read.\nSend the body uncompressed.\n",
                        host = target.host
                    ),
                ));
            }
            event
                .secret
                .get_or_insert_with(|| format!("not inspected: body is {encoding}"));
        }
    }

    let mut req = req;
    let agent_h2 = req.version() == Version::HTTP_2;
    let client_upgrade = wants_upgrade(req.headers());
    let upgrade_fut = client_upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{}?{q}", allowed.path),
        None => allowed.path.clone(),
    };
    let uri = match upstream_uri(&target, &path_and_query) {
        Ok(uri) => uri,
        Err(_) => return Ok(deny(&shared, event, DenyReason::AmbiguousPath, &target)),
    };
    let mut headers = parts.headers;
    let upgrade_header = headers.get(UPGRADE).cloned();
    strip_hop_by_hop(&mut headers);
    headers.remove(HOST);
    if let Some(auth) = &route.auth {
        auth.apply(&mut headers);
    }
    let mut websocket = false;
    if let (true, Some(protocol)) = (client_upgrade, upgrade_header) {
        websocket = protocol.as_bytes().eq_ignore_ascii_case(b"websocket");
        if secrets.is_some() && !websocket && shared.dlp == DlpMode::Block {
            // After the switch the bytes are another protocol's, which the proxy cannot look
            // through for the bottle's secrets.
            event.decision = "deny";
            event.reason = Some("uninspectable-upgrade".into());
            event.status = StatusCode::FORBIDDEN.as_u16();
            shared.audit.record(&event);
            return Ok(text_response(
                StatusCode::FORBIDDEN,
                format!(
                    "claude-bottle egress proxy: the request to {host} asks to switch to {proto}, \
                     which this bottle's proxy cannot look through for the bottle's secrets \
                     (egress.dlp: block); only WebSocket upgrades are relayed.\n",
                    host = target.host,
                    proto = String::from_utf8_lossy(protocol.as_bytes()),
                ),
            ));
        }
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol);
        if secrets.is_some() {
            // No extension, so every frame can be read (permessage-deflate could not).
            headers.remove("sec-websocket-extensions");
        }
    }
    let finding = Arc::new(dlp::Finding::default());
    let own_token = route.token_ref.clone();
    let guard = secrets.as_ref().map(|set| dlp::Guard {
        set: set.clone(),
        own_token: route.token_ref.clone(),
        block: shared.dlp == DlpMode::Block,
        finding: finding.clone(),
    });
    if secrets.is_some() || shared.intercepted {
        // Answers are masked as they stream; a compressed one could not be. Pipelock refuses
        // compressed answers outright (it could not scan them).
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    let mut upstream_req = Request::new(dlp::GuardedBody::new(body, guard));
    *upstream_req.method_mut() = parts.method;
    *upstream_req.uri_mut() = uri;
    *upstream_req.version_mut() = Version::HTTP_11;
    *upstream_req.headers_mut() = headers;
    drop(policy);

    // The upstream leg mirrors the agent's: h2 only for an h2 agent (ALPN decides), HTTP/1.1
    // otherwise, which also keeps upgrades possible and spreads load over pooled connections.
    let client = match agent_h2 && !client_upgrade {
        true => &shared.client,
        false => &shared.client_h1,
    };
    // From here the upstream may get the request: the decision line is written now, and the
    // outcome line when the exchange ends, even if the agent goes away first.
    let mut pending = Pending::forward(shared.audit.clone(), event);
    let mut response = match client.request(upstream_req).await {
        Ok(response) => response,
        Err(e) => match finding.get() {
            Some(hit) if shared.dlp == DlpMode::Block => {
                return Ok(secret_in_body(pending, &hit, &target));
            }
            _ => return Ok(upstream_failure(pending, &e, &target)),
        },
    };
    if let (Some(hit), Some(event)) = (finding.get(), pending.event_mut()) {
        event.secret = Some(format!("{} ({}, in the body)", hit.name, hit.encoding));
    }
    if let Some(event) = pending.event_mut() {
        event.status = response.status().as_u16();
    }
    if shared.intercepted
        && (response.status().is_client_error() || response.status().is_server_error())
        && let Some(reason) = response.headers().get(upstream::BLOCK_REASON_HEADER)
    {
        // Pipelock refused the request inside the tunnel (its DLP, its rate limit): the
        // proxy's own refusal, with pipelock's reason and what to do.
        let reason = upstream::block_reason(reason.as_bytes());
        let status = match response.status() {
            StatusCode::TOO_MANY_REQUESTS => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::FORBIDDEN,
        };
        tracing::info!(host = %target.host, %reason, "pipelock refused a request");
        return Ok(pipelock_refusal(pending, &reason, status, &target));
    }

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_fut) = upgrade_fut else {
            return Ok(bad_gateway(
                pending,
                "upstream switched protocols unasked",
                FailureClass::BrokeOff,
                &target,
            ));
        };
        let upstream_fut = hyper::upgrade::on(&mut response);
        let inspect = secrets
            .as_ref()
            .filter(|_| websocket)
            .map(|set| ws::Inspect {
                set: set.clone(),
                own_token: own_token.clone(),
                block: shared.dlp == DlpMode::Block,
                audit: shared.audit.clone(),
                event: pending.event_mut().map(|e| e.clone()),
                masked: pending
                    .event_mut()
                    .map(|e| e.masked.clone())
                    .unwrap_or_default(),
            });
        tokio::spawn(async move {
            match tokio::try_join!(client_fut, upstream_fut) {
                Ok((client, upstream)) => {
                    let mut client = TokioIo::new(client);
                    let mut upstream = TokioIo::new(upstream);
                    match inspect {
                        Some(inspect) => ws::relay(client, upstream, inspect).await,
                        None => {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
        pending.finish(Outcome::Upgraded);
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, full("")));
    }

    strip_hop_by_hop(response.headers_mut());
    let Some(set) = secrets else {
        let (parts, body) = response.into_parts();
        let body = AuditedBody::new(body, pending).boxed_unsync();
        return Ok(Response::from_parts(parts, body));
    };
    // Reflected secrets: masked in the headers, the reason phrase and the body.
    let masked = pending
        .event_mut()
        .map(|e| e.masked.clone())
        .unwrap_or_default();
    let in_head = dlp::mask_headers(&set, response.headers_mut());
    masked.fetch_add(in_head as u64, std::sync::atomic::Ordering::Relaxed);
    if let Some(reason) = response.extensions().get::<hyper::ext::ReasonPhrase>()
        && set.find(reason.as_bytes(), None).is_some()
    {
        response
            .extensions_mut()
            .remove::<hyper::ext::ReasonPhrase>();
        masked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    if let Some(encoding) = response
        .headers()
        .get(http::header::CONTENT_ENCODING)
        .filter(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
        && let Some(event) = pending.event_mut()
    {
        // Asked for identity and answered compressed anyway: passed on unmasked, and said.
        let note = format!("answer not inspected: Content-Encoding {encoding:?}");
        tracing::warn!(host = %target.host, "{note}");
        event.secret.get_or_insert(note);
    }
    let (parts, body) = response.into_parts();
    let body = dlp::MaskedBody::new(body, set, masked);
    let body = AuditedBody::new(body, pending).boxed_unsync();
    Ok(Response::from_parts(parts, body))
}

/// The first bottle secret in the request's head (host name, path, query, a header), and
/// where it was.
fn head_secret(
    set: &dlp::SecretSet,
    req: &Request<Incoming>,
    target: &Target,
    own: Option<&str>,
) -> Option<(dlp::Hit, &'static str)> {
    if let Some(hit) = set.find_in_host(&target.host) {
        return Some((hit, "host name"));
    }
    if let Some(hit) = set.find_in_url_part(req.uri().path(), own) {
        return Some((hit, "path"));
    }
    if let Some(hit) = req.uri().query().and_then(|q| set.find_in_url_part(q, own)) {
        return Some((hit, "query"));
    }
    req.headers().iter().find_map(|(name, value)| {
        let text = String::from_utf8_lossy(value.as_bytes());
        set.find_in_url_part(&text, own)
            .map(|hit| (hit, header_place(name)))
    })
}

/// Reads and drops (a bounded part of) a refused request's body before the refusal is sent: a
/// connection closed with the agent's bytes unread is reset, and the agent would see the reset
/// instead of the answer.
async fn discard_body(req: Request<Incoming>) {
    const MOST: usize = 1 << 20;
    let mut body = req.into_body();
    let mut read = 0;
    let drain = async {
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |d| d.len());
            if read > MOST {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}

/// Names a header for the refusal text without its value.
fn header_place(name: &HeaderName) -> &'static str {
    match *name {
        http::header::AUTHORIZATION => "Authorization header",
        http::header::COOKIE => "Cookie header",
        http::header::USER_AGENT => "User-Agent header",
        _ => "headers",
    }
}

/// A request body's `Content-Encoding` other than identity, if it has a body.
fn compressed_body(req: &Request<Incoming>) -> Option<String> {
    use hyper::body::Body as _;
    if req.body().is_end_stream() {
        return None;
    }
    let value = req.headers().get(http::header::CONTENT_ENCODING)?;
    let text = String::from_utf8_lossy(value.as_bytes()).trim().to_owned();
    (!text.eq_ignore_ascii_case("identity") && !text.is_empty()).then_some(text)
}

/// What the agent reads when a request would have carried a secret.
fn secret_text(hit: &dlp::Hit, place: &str, host: &str) -> String {
    format!(
        "claude-bottle egress proxy: the request to {host} carries the value of {name} \
         ({encoding}, in the {place}), and this bottle's secrets do not leave it; nothing \
         complete was sent.\nRemove {name}'s value from the request. If {host} must receive \
         it as a credential, ask the operator for a route that injects it (the supervise MCP \
         tool `egress-block`, naming {name}); the proxy then adds it itself.\n",
        name = hit.name,
        encoding = hit.encoding,
    )
}

/// A request (or CONNECT) whose wildcard-chosen host label looks like a credential.
pub(crate) fn label_denial(
    shared: &Shared,
    mut event: AuditEvent,
    suspicion: &labels::Suspicion,
) -> Response<ProxyBody> {
    event.decision = "deny";
    event.reason = Some("credential-shaped-host".into());
    event.status = StatusCode::FORBIDDEN.as_u16();
    shared.audit.record(&event);
    text_response(
        StatusCode::FORBIDDEN,
        format!(
            "claude-bottle egress proxy: the first label of the host name {why}, so it looks \
             like a credential; it was refused before any DNS lookup and nothing was sent.\n\
             A wildcard route lets the agent choose that label, and a host name is a way out. \
             If this is a real host, ask the operator for it as an exact route (the supervise \
             MCP tool `egress-block`).\n",
            why = suspicion.why
        ),
    )
}

pub(crate) fn secret_denial(
    shared: &Shared,
    mut event: AuditEvent,
    hit: &dlp::Hit,
    place: &str,
    target: &Target,
) -> Response<ProxyBody> {
    event.decision = "deny";
    event.reason = Some("secret-in-request".into());
    event.status = StatusCode::FORBIDDEN.as_u16();
    // The audit log names the variable, never the value: a host carrying it is masked.
    let mut host = event.host.clone().into_bytes();
    let policy = shared.policy.load();
    if policy.secrets.mask(&mut host) > 0 || place == "host name" {
        event.host = "*".repeat(host.len());
    }
    shared.audit.record(&event);
    // The agent knows the host it asked for; the text names the route's host only by
    // "this request" when the host itself carries the secret.
    let shown = match place {
        "host name" => "a host whose name carries a secret".to_owned(),
        _ => target.host.clone(),
    };
    text_response(StatusCode::FORBIDDEN, secret_text(hit, place, &shown))
}

/// A secret found while the body streamed: the upstream request was ended before it was
/// complete (the outcome line records it).
fn secret_in_body(mut pending: Pending, hit: &dlp::Hit, target: &Target) -> Response<ProxyBody> {
    if let Some(event) = pending.event_mut() {
        event.decision = "deny";
        event.reason = Some("secret-in-request".into());
        event.status = StatusCode::FORBIDDEN.as_u16();
        event.secret = Some(format!("{} ({}, in the body)", hit.name, hit.encoding));
    }
    tracing::warn!(host = %target.host, secret = %hit.name, "ended a request whose body carries a bottle secret");
    pending.finish(Outcome::Refused);
    text_response(
        StatusCode::FORBIDDEN,
        secret_text(hit, "body", &target.host),
    )
}

/// The URI the upstream request is sent with. Its authority becomes h2's `:authority` (and the
/// HTTP/1.1 `Host`), so the scheme's default port is left out, as HTTP/1.1 clients write
/// `Host`: some virtual hosts do not match `host:443`.
fn upstream_uri(target: &Target, path_and_query: &str) -> Result<Uri, http::Error> {
    let (scheme, default_port) = match target.tls {
        true => ("https", 443),
        false => ("http", 80),
    };
    let host = match target.host.contains(':') {
        true => format!("[{}]", target.host),
        false => target.host.clone(),
    };
    let authority = match target.port == default_port {
        true => host,
        false => format!("{host}:{}", target.port),
    };
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
}

/// Inside a tunnel the request's authority (Host header or h2 `:authority`) must name the
/// CONNECT target: a request cannot borrow another host's tunnel.
fn authority_matches(req: &Request<Incoming>, target: &Target) -> bool {
    let default_port = if target.tls { 443 } else { 80 };
    let same = |text: &str| {
        let Ok(authority) = text.parse::<http::uri::Authority>() else {
            return false;
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        host == target.host && authority.port_u16().unwrap_or(default_port) == target.port
    };
    let uri_ok = req.uri().authority().is_none_or(|a| same(a.as_str()));
    let host_ok = match req.headers().get(HOST) {
        Some(value) => value.to_str().is_ok_and(same),
        None => req.version() == Version::HTTP_2 && req.uri().authority().is_some(),
    };
    uri_ok && host_ok
}

fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes the fixed hop-by-hop headers and every header the `Connection` header names (so
/// an agent cannot name `Authorization` hop-by-hop to dodge the strip-and-inject step).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// The text the agent sees for a refusal. It names the host and what to do, nothing else.
pub(crate) fn denial_text(reason: DenyReason, target: &Target) -> String {
    let host = &target.host;
    match reason {
        DenyReason::NoRoute => format!(
            "claude-bottle egress proxy: {host} is not in this bottle's egress routes.\n\
             To ask for it, call the supervise MCP tool `egress-block` with host \"{host}\" \
             and a justification; the operator approves or rejects it.\n"
        ),
        DenyReason::PathNotAllowed => format!(
            "claude-bottle egress proxy: this path on {host} is outside the route's \
             path_allowlist.\nTo ask for it, call the supervise MCP tool `egress-block` with host \
             \"{host}\", the path_allowlist you need, and a justification.\n"
        ),
        DenyReason::AmbiguousPath => format!(
            "claude-bottle egress proxy: the request path for {host} is ambiguous and is \
             refused: it has {AMBIGUOUS_FORMS}.\nSend the path as the upstream should read it.\n"
        ),
        DenyReason::GitPush => format!(
            "claude-bottle egress proxy: git push over HTTPS is refused on every route ({host}).\n\
             Push through the git gate instead (git://git-gate/<name>.git), where pushes are \
             scanned for secrets before they reach the upstream.\n"
        ),
        DenyReason::CredentialOverCleartext => format!(
            "claude-bottle egress proxy: {host} carries a credential and is reachable only \
             over https://.\n"
        ),
        DenyReason::HostMismatch => format!(
            "claude-bottle egress proxy: the request's Host does not match the tunnel to {host}.\n"
        ),
        DenyReason::Loop => format!(
            "claude-bottle egress proxy: {host} leads back to this proxy; the loop is refused.\n"
        ),
        DenyReason::IpLiteral => format!(
            "claude-bottle egress proxy: {host} is an IP address. IP addresses are never egress \
             routes (routes name hosts), so no address can be reached through this proxy; \
             use the host's name.\n"
        ),
        DenyReason::PortNotRouted => format!(
            "claude-bottle egress proxy: no egress route allows port {port}, so {host}:{port} \
             is refused. A route uses port 443 unless the bottle's manifest names another port \
             for its host.\n",
            port = target.port
        ),
        DenyReason::PrivateAddress => private_address_text(host, None),
        DenyReason::Pipelock => pipelock_text("no reason given", target),
    }
}

/// The refusal of a route whose host resolved to a private or special address: the address and
/// the manifest key that exempts it. Addresses are the bundle's own DNS answer for a host the
/// agent named, so they tell the agent nothing it could not learn by asking.
fn private_address_text(host: &str, addr: Option<std::net::IpAddr>) -> String {
    let (at, block) = match addr {
        Some(addr @ std::net::IpAddr::V4(_)) => (format!(" {addr},"), format!("{addr}/32")),
        Some(addr @ std::net::IpAddr::V6(_)) => (format!(" {addr},"), format!("{addr}/128")),
        None => (String::new(), "10.20.0.0/16".to_owned()),
    };
    format!(
        "claude-bottle egress proxy: {host} resolves to{at} a private or special address, \
         which this bottle may not reach.\nIf {host} is an internal host the bottle should \
         reach, the operator adds the address to `egress.allow_private` in the bottle's \
         manifest (e.g. `allow_private: [\"{block}\"]`) and starts the bottle again.\n"
    )
}

pub(crate) fn deny(
    shared: &Shared,
    mut event: AuditEvent,
    reason: DenyReason,
    target: &Target,
) -> Response<ProxyBody> {
    event.decision = "deny";
    event.reason = Some(reason.code().to_owned());
    event.status = StatusCode::FORBIDDEN.as_u16();
    shared.audit.record(&event);
    text_response(StatusCode::FORBIDDEN, denial_text(reason, target))
}

/// A forwarded request the connector refused (private address, loop) or could not send.
fn upstream_failure(
    pending: Pending,
    error: &hyper_util::client::legacy::Error,
    target: &Target,
) -> Response<ProxyBody> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    // A failure with no connect error in its chain happened on an established connection.
    let mut class = FailureClass::BrokeOff;
    while let Some(e) = source {
        match e.downcast_ref::<UpstreamError>() {
            Some(UpstreamError::Refused { addr, .. }) => {
                tracing::info!(host = %target.host, error = %e, "refused a private address");
                let text = private_address_text(&target.host, Some(*addr));
                return refused_after_forward(pending, DenyReason::PrivateAddress, text);
            }
            Some(UpstreamError::Loop { .. }) => {
                tracing::warn!(host = %target.host, error = %e, "refused a request looping to the proxy");
                let text = denial_text(DenyReason::Loop, target);
                return refused_after_forward(pending, DenyReason::Loop, text);
            }
            Some(UpstreamError::Blocked {
                reason,
                rate_limited,
                ..
            }) => {
                tracing::info!(host = %target.host, %reason, "pipelock refused a tunnel");
                let status = match rate_limited {
                    true => StatusCode::TOO_MANY_REQUESTS,
                    false => StatusCode::FORBIDDEN,
                };
                return pipelock_refusal(pending, reason, status, target);
            }
            Some(other) => class = other.class(),
            None => {}
        }
        source = e.source();
    }
    let detail = error_chain(error);
    tracing::warn!(host = %target.host, error = %detail, "upstream request failed");
    bad_gateway(pending, &detail, class, target)
}

/// Pipelock's refusal as the proxy's own: `status` (403, or 429 for its rate limit), its
/// reason, and what to do. The outcome line records the reason.
fn pipelock_refusal(
    mut pending: Pending,
    reason: &str,
    status: StatusCode,
    target: &Target,
) -> Response<ProxyBody> {
    if let Some(event) = pending.event_mut() {
        event.decision = "deny";
        event.reason = Some(format!("{}: {reason}", DenyReason::Pipelock.code()));
        event.status = status.as_u16();
    }
    pending.finish(Outcome::Refused);
    text_response(status, pipelock_text(reason, target))
}

/// What the agent reads when pipelock refused: its reason and the supervise tool to ask with.
fn pipelock_text(reason: &str, target: &Target) -> String {
    let host = &target.host;
    format!(
        "claude-bottle egress proxy: pipelock, the bottle's second allowlist and DLP check          behind this proxy, refused the request to {host}: {reason}
         If the request is needed, ask the operator with the supervise MCP tool          `pipelock-block`: `change` is a YAML mapping of the pipelock settings to change          (e.g. `api_allowlist: [{host}]` for a domain it does not allow), with a justification.          `egress-block` changes this proxy's routes, not pipelock's.
"
    )
}

/// A denial found only while connecting: the outcome line records it.
fn refused_after_forward(
    mut pending: Pending,
    reason: DenyReason,
    text: String,
) -> Response<ProxyBody> {
    if let Some(event) = pending.event_mut() {
        event.decision = "deny";
        event.reason = Some(reason.code().to_owned());
        event.status = StatusCode::FORBIDDEN.as_u16();
    }
    pending.finish(Outcome::Refused);
    text_response(StatusCode::FORBIDDEN, text)
}

fn bad_gateway(
    mut pending: Pending,
    detail: &str,
    class: FailureClass,
    target: &Target,
) -> Response<ProxyBody> {
    if let Some(event) = pending.event_mut() {
        event.decision = "error";
        event.reason = Some(detail.to_owned());
        event.status = StatusCode::BAD_GATEWAY.as_u16();
    }
    pending.finish(Outcome::Failed);
    text_response(StatusCode::BAD_GATEWAY, unreachable_text(class, target))
}

/// What the agent reads for a 502: the host, the class of failure and what to check. Addresses
/// and error details stay in the audit log, which only the operator can read.
fn unreachable_text(class: FailureClass, target: &Target) -> String {
    format!(
        "claude-bottle egress proxy: the upstream {host} could not be reached: {why}.\n\
         The operator can read the detail in the bundle's audit log \
         (/var/log/bottle/audit.jsonl in the bottle's bundle container).\n",
        host = target.host,
        why = class.explain(&target.host, target.port),
    )
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// A plain-text response.
pub(crate) fn text_response(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(host: &str, port: u16, tls: bool) -> String {
        let target = Target {
            host: host.into(),
            port,
            tls,
        };
        upstream_uri(&target, "/p?q=1")
            .map(|u| u.to_string())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn the_upstream_authority_has_no_default_port() {
        assert_eq!(
            uri("api.example.com", 443, true),
            "https://api.example.com/p?q=1"
        );
        assert_eq!(
            uri("api.example.com", 80, false),
            "http://api.example.com/p?q=1"
        );
        assert_eq!(
            uri("api.example.com", 8443, true),
            "https://api.example.com:8443/p?q=1"
        );
        // A default port of the other scheme is not the default here.
        assert_eq!(
            uri("api.example.com", 80, true),
            "https://api.example.com:80/p?q=1"
        );
        assert_eq!(
            uri("api.example.com", 443, false),
            "http://api.example.com:443/p?q=1"
        );
        assert_eq!(uri("::1", 8443, true), "https://[::1]:8443/p?q=1");
    }
}
