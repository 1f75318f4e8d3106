//! The reading half of `doctor`: everything it asks Azure about one plan, gathered
//! into an [`Observed`] value that [`super::assess`] judges without further IO.
//!
//! Promises: only reads. Every call here is a GET or one of the read-only POSTs
//! (`listKeys`, `listSecrets`, the permissions API's GET, Blob Get Account
//! Information); nothing is written, regenerated, resynced or disabled. Independent
//! reads run concurrently; a read whose token could not be acquired is not sent. Key
//! values are fingerprinted where they are read and dropped at once. Each consumer
//! kind's reads are its module's (`crate::consumer`).

use chrono::{DateTime, Utc};
use futures::future::join_all;

use super::report::{Resource, Service};
use crate::azure::authorization::MissingAction;
use crate::azure::monitor::{DiagnosticSetting, StorageService};
use crate::azure::probe::Probe;
use crate::azure::roles::Action;
use crate::azure::storage::StorageAccount;
use crate::azure::{Azure, Error};
use crate::consumer::{self, Seen};
use crate::key::KeyName;
use crate::plan::Plan;
use crate::secret::Fingerprint;

/// How many of a secret's newest enabled versions are read and fingerprinted. A
/// secret rotated often has thousands of versions; reading them all would spend the
/// vault's request budget on versions nobody reads any more.
pub const VERSIONS_READ: usize = 25;

/// How many reads of one kind (secret versions, datastore secrets) run at once.
pub const CONCURRENCY: usize = 8;

/// The result of one read.
#[derive(Debug)]
pub enum Got<T> {
    Done(T),
    Failed(Error),
    /// Not attempted; the reason, for the report.
    NotTried(String),
}

impl<T> Got<T> {
    pub(crate) fn from(result: Result<T, Error>) -> Got<T> {
        match result {
            Ok(v) => Got::Done(v),
            Err(e) => Got::Failed(e),
        }
    }
    pub fn done(&self) -> Option<&T> {
        match self {
            Got::Done(v) => Some(v),
            _ => None,
        }
    }
}

/// Everything read about one plan.
#[derive(Debug)]
pub struct Observed {
    pub tokens: Vec<TokenSeen>,
    pub permissions: Vec<PermissionsSeen>,
    pub account: Got<StorageAccount>,
    /// Both keys, key1 first.
    pub keys: Got<Vec<KeySeen>>,
    /// Each consumer table, in report order.
    pub consumers: Vec<Seen>,
    /// What discovery found of the account (filled in by [`super::examine_with`]).
    pub discovered: Option<Discovered>,
    /// The usage gate's logs and access, when the plan has a gate.
    pub gate: Option<GateSeen>,
}

/// Discovery's word on the plan's account.
#[derive(Debug)]
pub enum Discovered {
    Found(crate::discover::AccountDiscovery),
    /// It could not run for this account; the reason.
    Failed(String),
}

/// What `doctor` read for the usage gate.
#[derive(Debug)]
pub struct GateSeen {
    /// Each service the gate reads, and its diagnostic settings.
    pub settings: Vec<(StorageService, Got<Vec<DiagnosticSetting>>)>,
    /// A token for the Log Analytics query API.
    pub token: Got<()>,
    pub required: Vec<Action>,
    /// The query actions missing at the workspace.
    pub missing: Got<Vec<MissingAction>>,
}

#[derive(Debug)]
pub struct TokenSeen {
    pub service: Service,
    pub audience: Option<String>,
    pub result: Got<()>,
    /// The credential that gave (or failed to give) the token, for people.
    pub credential: String,
}

#[derive(Debug)]
pub struct PermissionsSeen {
    pub scope: String,
    pub resource: Resource,
    pub required: Vec<Action>,
    pub missing: Got<Vec<MissingAction>>,
}

#[derive(Debug)]
pub struct KeySeen {
    pub name: KeyName,
    pub fingerprint: Fingerprint,
    pub created: Option<DateTime<Utc>>,
    pub probe: Got<Probe>,
}

/// The actions keyflip needs at each scope of `plan`, in report order, each scope once.
/// The same checks as a rotation's (`crate::rotation::required_permissions`).
pub fn required_permissions(plan: &Plan) -> Vec<(String, Resource, Vec<Action>)> {
    let mut checks = vec![(
        plan.storage_account.to_string(),
        Resource::STORAGE_ACCOUNT,
        crate::rotation::observe::account_actions(),
    )];
    checks.extend(
        consumer::permissions(plan)
            .into_iter()
            .map(|p| (p.scope, p.resource, p.actions)),
    );
    checks
}

/// Reads everything `doctor` needs to know about `plan`.
pub async fn observe(azure: &Azure, plan: &Plan) -> Observed {
    let tokens = tokens(azure, plan).await;
    let usable = |service: Service| -> Result<(), String> {
        match tokens.iter().find(|t| t.service == service) {
            Some(TokenSeen {
                result: Got::Failed(_),
                ..
            }) => Err(format!("no {} token (see above)", service.label())),
            _ => Ok(()),
        }
    };
    let arm = usable(Service::ARM);
    let permissions = async {
        join_all(
            required_permissions(plan)
                .into_iter()
                .map(|(scope, resource, required)| {
                    let arm = arm.clone();
                    async move {
                        let missing = match arm {
                            Ok(()) => Got::from(azure.missing_permissions(&scope, &required).await),
                            Err(why) => Got::NotTried(why),
                        };
                        PermissionsSeen {
                            scope,
                            resource,
                            required,
                            missing,
                        }
                    }
                }),
        )
        .await
    };
    let storage = storage(azure, plan, arm.clone());
    let consumers = consumer::examine(azure, plan, usable);
    let gate = gate(azure, plan, arm.clone());
    let (permissions, (account, keys), consumers, gate) =
        futures::join!(permissions, storage, consumers, gate);
    Observed {
        tokens,
        permissions,
        account,
        keys,
        consumers,
        discovered: None,
        gate,
    }
}

/// The usage gate's reads: the diagnostic settings of each service it reads, a Log
/// Analytics token, and the query permissions at the workspace.
async fn gate(azure: &Azure, plan: &Plan, arm: Result<(), String>) -> Option<GateSeen> {
    let gate = plan.usage_gate.as_ref()?;
    let required: Vec<Action> = gate.services.iter().map(|s| s.query_action()).collect();
    let settings = async {
        join_all(gate.services.iter().map(|service| {
            let arm = arm.clone();
            async move {
                let got = match arm {
                    Ok(()) => Got::from(
                        azure
                            .diagnostic_settings(&plan.storage_account, *service)
                            .await,
                    ),
                    Err(why) => Got::NotTried(why),
                };
                (*service, got)
            }
        }))
        .await
    };
    let audience = azure.cloud().log_analytics_audience();
    let token = async { Got::from(azure.check_token(&audience).await) };
    let missing = async {
        match &arm {
            Ok(()) => Got::from(
                azure
                    .missing_permissions(gate.workspace.as_str(), &required)
                    .await,
            ),
            Err(why) => Got::NotTried(why.clone()),
        }
    };
    let (settings, token, missing) = futures::join!(settings, token, missing);
    Some(GateSeen {
        settings,
        token,
        required,
        missing,
    })
}

/// The audiences the plan needs, each asked for once, concurrently.
async fn tokens(azure: &Azure, plan: &Plan) -> Vec<TokenSeen> {
    let cloud = azure.cloud();
    let mut wanted = vec![(Service::ARM, Ok(cloud.arm_audience.clone()))];
    for (service, audience) in consumer::tokens(plan, cloud) {
        if !wanted.iter().any(|(s, _)| *s == service) {
            wanted.push((service, audience));
        }
    }
    join_all(wanted.into_iter().map(|(service, audience)| async move {
        let (audience, result) = match audience {
            Ok(a) => {
                let result = Got::from(azure.check_token(&a).await);
                (Some(a), result)
            }
            Err(why) => (None, Got::NotTried(why)),
        };
        TokenSeen {
            service,
            audience,
            result,
            // After the request: the default chain has made its choice by now.
            credential: azure.credential_in_use(),
        }
    }))
    .await
}

async fn storage(
    azure: &Azure,
    plan: &Plan,
    arm: Result<(), String>,
) -> (Got<StorageAccount>, Got<Vec<KeySeen>>) {
    if let Err(why) = arm {
        return (Got::NotTried(why.clone()), Got::NotTried(why));
    }
    let id = &plan.storage_account;
    let (account, keys) = futures::join!(azure.storage_account(id), azure.storage_keys(id));
    let account = Got::from(account);
    let keys = match keys {
        Err(e) => Got::Failed(e),
        Ok(keys) => {
            let seen = join_all(KeyName::BOTH.map(|name| {
                let key = keys.get(name);
                let account = account.done();
                async move {
                    let probe = match account {
                        Some(a) => Got::from(azure.probe_account_key(a, &key.value).await),
                        None => Got::NotTried("the storage account could not be read".into()),
                    };
                    KeySeen {
                        name,
                        fingerprint: azure.fingerprint(&key.value),
                        created: key
                            .created
                            .or_else(|| account.and_then(|a| a.key_created(name))),
                        probe,
                    }
                }
            }))
            .await;
            Got::Done(seen)
        }
    };
    (account, keys)
}
