//! Simulated data-plane clients: the consumer nobody wrote down. Each one captured
//! the value of one account key when the twin started and sends a SharedKey-signed
//! Blob request every `interval` of twin time, from its own IP and user agent, with
//! that value forever. While the value is still one of the account's keys its
//! requests succeed and are logged with that key's hash; once the key is
//! regenerated they fail (403, logged without a hash).
//!
//! Requests are materialised lazily, on the twin clock: before the twin handles any
//! request (and before a query reads the logs) every tick that has come due is
//! replayed in order, each judged against the account as it is then, at the tick's
//! time. Nothing changes the account between two of the twin's requests, so this
//! gives the same rows as a client running in real time, and it keeps working when
//! tests move the clock by hours. The simulated requests reach the resource logs
//! only, never the admin request log (they are not requests keyflip made).

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::logs::{Auth, BlobRequest, record_blob};
use crate::state::{Core, StorageAccount};
use crate::world::{ClientOperation, ClientSpec, KeyName, parse_caller};

/// At most this many ticks are replayed per client at once (as many as a workspace
/// keeps rows); a bigger jump of the clock skips the oldest.
const MAX_TICKS_PER_CATCH_UP: i64 = super::logs::MAX_ROWS_PER_WORKSPACE as i64;

#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub name: String,
    pub account: String,
    /// The key name it captured (`key1`/`key2`) and that key's value then.
    pub key_name: &'static str,
    pub captured: String,
    pub interval: TimeDelta,
    pub user_agent: String,
    /// `IP:port`, as `CallerIpAddress` shows it.
    pub caller: String,
    pub operation: ClientOperation,
    pub enabled: bool,
    /// When its next request is due.
    pub next: DateTime<Utc>,
    /// Requests sent so far, and the last one's status.
    pub sent: u64,
    pub last_status: Option<u16>,
}

impl Client {
    pub fn from_world(
        c: &ClientSpec,
        account: &StorageAccount,
        now: DateTime<Utc>,
    ) -> Result<Client, String> {
        let (index, key_name) = match c.key {
            KeyName::Key1 => (0, "key1"),
            KeyName::Key2 => (1, "key2"),
        };
        let (ip, port) = parse_caller(c.caller_ip.get_ref())
            .ok_or_else(|| format!("client {}: bad caller_ip", c.name.get_ref()))?;
        // One port for the client's life, like a process on one keep-alive connection.
        let port = port.unwrap_or_else(|| 49_152 + (rand::random::<u16>() % 16_384));
        let caller = std::net::SocketAddr::new(ip, port).to_string();
        Ok(Client {
            name: c.name.get_ref().clone(),
            account: account.name.clone(),
            key_name,
            captured: account.keys[index].value.clone(),
            interval: crate::clock::secs(c.interval_secs),
            user_agent: c.user_agent.get_ref().clone(),
            caller,
            operation: c.operation,
            enabled: c.enabled,
            // Its first request goes out as the twin starts.
            next: now,
            sent: 0,
            last_status: None,
        })
    }

    /// What the admin API shows (never the captured key value).
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "account": self.account,
            "key": self.key_name,
            "interval_secs": self.interval.num_milliseconds() as f64 / 1000.0,
            "user_agent": self.user_agent,
            "caller_ip": self.caller,
            "operation": match self.operation {
                ClientOperation::ListContainers => "ListContainers",
                ClientOperation::GetAccountInformation => "GetAccountInformation",
            },
            "enabled": self.enabled,
            "next_request_at": self.enabled.then(|| self.next.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            "requests_sent": self.sent,
            "last_status": self.last_status,
        })
    }
}

/// The earliest instant any enabled client is due (ms since the epoch), read without
/// the state lock on every request.
#[derive(Debug)]
pub(crate) struct Due(AtomicI64);

impl Default for Due {
    fn default() -> Self {
        Due(AtomicI64::new(i64::MIN))
    }
}

impl Due {
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        now.timestamp_millis() >= self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, core: &Core) {
        let next = core
            .monitor
            .clients
            .iter()
            .filter(|c| c.enabled)
            .map(|c| c.next.timestamp_millis())
            .min()
            .unwrap_or(i64::MAX);
        self.0.store(next, Ordering::Relaxed);
    }
}

/// Replays every client request due by `now`, in time order across clients.
pub(crate) fn catch_up(core: &mut Core, now: DateTime<Utc>, base_url: &str) {
    for c in core.monitor.clients.iter_mut() {
        if !c.enabled || c.interval <= TimeDelta::zero() {
            continue;
        }
        let behind = (now - c.next).num_milliseconds() / c.interval.num_milliseconds().max(1);
        if behind > MAX_TICKS_PER_CATCH_UP {
            c.next = now - c.interval * (MAX_TICKS_PER_CATCH_UP as i32);
        }
    }
    loop {
        let due = core
            .monitor
            .clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.enabled && c.next <= now)
            .min_by_key(|(_, c)| c.next)
            .map(|(i, _)| i);
        let Some(i) = due else { break };
        let (request, account) = {
            let c = &core.monitor.clients[i];
            (simulate(core, c, base_url), c.account.clone())
        };
        if let Some(r) = &request {
            record_blob(core, &account, r);
        }
        let c = &mut core.monitor.clients[i];
        c.sent += 1;
        c.last_status = request.as_ref().map(|r| r.status);
        c.next += c.interval;
    }
}

/// The request a client sends at its `next` tick, judged as the Blob service judges
/// it: accepted when its captured value is one of the account's keys at that time
/// and shared keys are allowed.
fn simulate(core: &Core, c: &Client, base_url: &str) -> Option<BlobRequest> {
    let acct = core.accounts.get(&c.account)?;
    let at = c.next;
    let matched = acct
        .keys
        .iter()
        .position(|k| k.value == c.captured && k.accepted_from <= at);
    let (auth, status, text) = match (acct.allow_shared_key_access, matched) {
        (true, Some(index)) => (
            Auth::AccountKey {
                index,
                value: c.captured.clone(),
            },
            200,
            "Success",
        ),
        _ => (Auth::AccountKeyRefused, 403, "AuthenticationError"),
    };
    let (operation, path, body) = match c.operation {
        ClientOperation::ListContainers => ("ListContainers", "?comp=list", 512),
        ClientOperation::GetAccountInformation => (
            "GetAccountInformation",
            "?restype=account&comp=properties",
            0,
        ),
    };
    Some(BlobRequest {
        time: at,
        operation,
        category: "StorageRead",
        auth,
        status,
        status_text: text,
        caller: c.caller.clone(),
        user_agent: c.user_agent.clone(),
        uri: format!("{base_url}/{}/{path}", acct.name),
        client_request_id: uuid::Uuid::new_v4().to_string(),
        request_id: uuid::Uuid::new_v4().to_string(),
        version: "2021-08-06".into(),
        object_key: format!("/{}", acct.name),
        duration_ms: 4.0,
        request_header_size: 512,
        response_body_size: if status == 200 { body } else { 0 },
    })
}

/// `GET /_admin/clients`: every simulated client, without key values.
pub(crate) fn admin_list(core: &Core) -> Value {
    Value::Array(core.monitor.clients.iter().map(Client::to_json).collect())
}

/// `PATCH /_admin/clients/{name}` with `{"enabled": bool}`. A client turned on
/// sends its next request now; the time it was off stays silent.
pub(crate) fn admin_patch(
    core: &mut Core,
    name: &str,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Value, (u16, String)> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Patch {
        enabled: bool,
    }
    let patch: Patch = serde_json::from_slice(body).map_err(|e| {
        (
            400,
            format!("the body must be {{\"enabled\": true|false}}: {e}"),
        )
    })?;
    let c = core
        .monitor
        .clients
        .iter_mut()
        .find(|c| c.name == name)
        .ok_or_else(|| (404, format!("no client named {name}")))?;
    if patch.enabled && !c.enabled {
        c.next = now;
    }
    c.enabled = patch.enabled;
    Ok(c.to_json())
}
