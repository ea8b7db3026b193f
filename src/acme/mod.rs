//! Automatic HTTPS: certificates for a listener's `acme` names obtained and renewed from an ACME
//! server (RFC 8555; Let's Encrypt by default), with no restart.
//!
//! ```toml
//! [listeners.https]
//! bind = "0.0.0.0:443"
//! [listeners.https.tls]
//! acme = ["example.com", "www.example.com"]   # one certificate for both
//!
//! [acme]
//! email = "ops@example.com"
//! challenge = "tls-alpn-01"                   # or "http-01", answered on port 80
//! ```
//!
//! One [`Acme`] runs per server, outside the config generations: a reload hands it from the old
//! gateway to the new one (as the TLS session ticketer is handed on), and [`Acme::sync`] then keeps
//! what is unchanged. It keeps one background task per *name set* (the names of one listener's
//! `acme`, in any order):
//!
//! 1. at start, the certificate stored for the set is loaded and served at once, before the
//!    listeners accept, if it has not expired; no order is placed while it is not due;
//! 2. an order runs when there is no certificate, and again when a third of the certificate's
//!    lifetime remains; its challenges are answered by the listeners ([`Challenges`]) while the
//!    ACME server checks them;
//! 3. the issued chain and key are stored (see `storage`), then swapped into the set's
//!    [`CertSlot`], which the listeners' resolvers read at every handshake: until then they serve
//!    the previous certificate, or refuse a handshake for a name they have none for;
//! 4. a failed order is logged with its names and the ACME problem document, and retried after
//!    `[acme] retry` (1 minute by default), doubling up to an hour. Nothing waits for an order: the
//!    server serves meanwhile.
//!
//! A reload keeps the task of every set it still names (an order in progress runs on, none is
//! started twice), stops those of sets it no longer names, and restarts them all if `[acme]`
//! itself changed (another directory or challenge).

mod challenge;
mod client;
mod order;
mod storage;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use instant_acme::Account;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;

pub use challenge::{answer_http01, is_tls_alpn01, Challenges, ACME_TLS_ALPN, HTTP01_PREFIX};

use crate::config::{AcmeConfig, ConfigError, ListenerConfig};
use crate::metrics::CertificateExpiry;

/// The longest a task sleeps before looking at the clock again: a suspended machine or a clock
/// set forward does not delay a renewal by more than this.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// The longest wait between two failed orders (unless `[acme] retry` is longer).
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// A name set: sorted, without duplicates.
type NameSet = Arc<[String]>;

fn name_set(names: &[String]) -> NameSet {
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    names.into()
}

/// A server's ACME certificates and the tasks that obtain and renew them.
pub struct Acme {
    shared: Arc<Shared>,
    running: Mutex<Running>,
}

/// What the tasks and the listeners share.
struct Shared {
    challenges: Arc<Challenges>,
    /// Every name set a listener names (or a build being made named).
    sets: Mutex<HashMap<NameSet, SetEntry>>,
}

struct SetEntry {
    slot: Arc<CertSlot>,
    /// The listeners that name the set, for the expiry metric.
    listeners: Vec<String>,
}

#[derive(Default)]
struct Running {
    /// The settings the tasks run with.
    settings: Option<Arc<Settings>>,
    tasks: HashMap<NameSet, JoinHandle<()>>,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme").finish_non_exhaustive()
    }
}

impl Drop for Acme {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Acme {
    /// A manager with no set and no task yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            shared: Arc::new(Shared {
                challenges: Arc::default(),
                sets: Mutex::default(),
            }),
            running: Mutex::default(),
        })
    }

    /// The answers to pending challenges, which the listeners give.
    pub fn challenges(&self) -> &Arc<Challenges> {
        &self.shared.challenges
    }

    /// The certificate slot of the set of `names` (in any order), made empty if new.
    pub fn slot(&self, names: &[String]) -> Arc<CertSlot> {
        let mut sets = self.shared.sets.lock().unwrap_or_else(|e| e.into_inner());
        let entry = sets.entry(name_set(names)).or_insert_with(|| SetEntry {
            slot: Arc::default(),
            listeners: Vec::new(),
        });
        Arc::clone(&entry.slot)
    }

    /// The build stage's part of `[acme]`: reads `ca`, and creates the storage directory (0700).
    pub fn prepare(config: &AcmeConfig) -> Result<Arc<Settings>, ConfigError> {
        let roots = roots(config)?;
        let server_dir = storage::server_dir(&config.storage.value, &config.directory);
        storage::create_private_dir(&server_dir).map_err(|e| {
            config.storage.at.error(format!(
                "cannot create the ACME storage directory {}: {e}",
                server_dir.display()
            ))
        })?;
        let http = client::AcmeHttp::new(roots).map_err(|e| {
            config
                .storage
                .at
                .error(format!("cannot make the ACME client: {e}"))
        })?;
        Ok(Arc::new(Settings {
            config: config.clone(),
            server_dir,
            http,
            account: tokio::sync::Mutex::new(None),
        }))
    }

    /// `parapet check`'s part of `[acme]`: reads `ca`; creates nothing.
    pub fn check(config: &AcmeConfig) -> Vec<ConfigError> {
        match &config.ca {
            Some(_) => roots(config).err().into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// Makes the running tasks those of `listeners`' name sets, with `settings`: starts the missing
    /// ones (serving a stored certificate first), stops those of sets no longer named, and keeps
    /// the others running. All are restarted if the settings changed.
    pub fn sync(&self, settings: Arc<Settings>, listeners: &[ListenerConfig]) {
        let mut wanted: HashMap<NameSet, Vec<String>> = HashMap::new();
        for l in listeners {
            if let Some(tls) = l.tls.as_ref().filter(|t| !t.acme.is_empty()) {
                wanted
                    .entry(name_set(&tls.acme))
                    .or_default()
                    .push(l.name.clone());
            }
        }
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime,
            Err(_) => {
                tracing::warn!("no async runtime: ACME certificates are not obtained");
                return;
            }
        };
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let settings = match &running.settings {
            Some(current) if current.config == settings.config => Arc::clone(current),
            _ => {
                for (_, task) in running.tasks.drain() {
                    task.abort();
                }
                running.settings = Some(Arc::clone(&settings));
                settings
            }
        };
        running.tasks.retain(|names, task| {
            let keep = wanted.contains_key(names);
            if !keep {
                tracing::info!(names = %names.join(","), "ACME: names no longer configured, not renewed any more");
                task.abort();
            }
            keep
        });
        {
            let mut sets = self.shared.sets.lock().unwrap_or_else(|e| e.into_inner());
            sets.retain(|names, _| wanted.contains_key(names));
            for (names, listeners) in &wanted {
                let entry = sets.entry(Arc::clone(names)).or_insert_with(|| SetEntry {
                    slot: Arc::default(),
                    listeners: Vec::new(),
                });
                entry.listeners.clone_from(listeners);
                if running.tasks.contains_key(names) {
                    continue;
                }
                let stored = load_stored(&settings, names);
                if let Some(issued) = stored.as_ref().filter(|i| !i.expired()) {
                    entry.slot.store(Some(Arc::clone(issued)));
                    tracing::info!(names = %names.join(","), expires_in_days = issued.days_left(), "ACME certificate loaded from storage");
                }
                let task = runtime.spawn(maintain(
                    Arc::clone(&self.shared),
                    Arc::clone(&settings),
                    Arc::clone(names),
                    Arc::clone(&entry.slot),
                    stored,
                ));
                running.tasks.insert(Arc::clone(names), task);
            }
        }
        drop(running);
        self.shared.publish_expiry();
    }

    /// Stops every task (an order in progress is abandoned, its answers withdrawn), and the expiry
    /// gauges of its certificates.
    pub fn stop(&self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for (_, task) in running.tasks.drain() {
            task.abort();
        }
        running.settings = None;
        crate::metrics::global().set_certificates("acme", self.shared.publisher(), Vec::new());
    }
}

impl Shared {
    /// This manager's id among the expiry gauge's publishers.
    fn publisher(&self) -> usize {
        self as *const Shared as usize
    }

    /// Publishes the expiry of every ACME certificate served, per listener and name.
    fn publish_expiry(&self) {
        let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        let mut certificates = Vec::new();
        for (names, entry) in sets.iter() {
            let Some(issued) = entry.slot.issued() else {
                continue;
            };
            for listener in &entry.listeners {
                for name in names.iter() {
                    certificates.push(CertificateExpiry {
                        listener: listener.clone(),
                        name: name.clone(),
                        not_after: issued.not_after,
                    });
                }
            }
        }
        crate::metrics::global().set_certificates("acme", self.publisher(), certificates);
    }
}

/// `[acme]` ready to use: what [`Acme::prepare`] read and made.
pub struct Settings {
    config: AcmeConfig,
    /// The storage directory of this ACME server (see `storage`).
    server_dir: PathBuf,
    http: client::AcmeHttp,
    /// The account, once loaded or created.
    account: tokio::sync::Mutex<Option<Account>>,
}

impl Settings {
    fn http(&self) -> client::AcmeHttp {
        self.http.clone()
    }
}

/// The roots the directory is verified with: `ca`'s certificates, else the system's (read once per
/// process, with the upstreams').
fn roots(config: &AcmeConfig) -> Result<RootCertStore, ConfigError> {
    use crate::proxy::tls::{native_roots, pem_roots, PemRootsError};
    let Some(ca) = &config.ca else {
        return Ok(RootCertStore::clone(native_roots()));
    };
    let cannot = |message: String| ca.at.error(format!("{}: {message}", ca.value.display()));
    pem_roots(&ca.value).map_err(|err| match err {
        PemRootsError::Read(e) | PemRootsError::Rejected(e) => cannot(e),
        PemRootsError::Invalid(e) => cannot(format!("not valid PEM: {e}")),
        PemRootsError::Empty => cannot(
            "no certificate in this file (expected PEM \"BEGIN CERTIFICATE\" blocks)".to_owned(),
        ),
    })
}

/// The certificate of one name set, swapped in place when renewed; empty until one is obtained.
#[derive(Debug, Default)]
pub struct CertSlot(ArcSwapOption<Issued>);

impl CertSlot {
    /// The certificate to serve, if there is one.
    pub fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        self.0.load().as_ref().map(|issued| Arc::clone(&issued.key))
    }

    fn issued(&self) -> Option<Arc<Issued>> {
        self.0.load_full()
    }

    fn store(&self, issued: Option<Arc<Issued>>) {
        self.0.store(issued);
    }
}

/// A certificate obtained through ACME, and its validity.
#[derive(Debug)]
struct Issued {
    key: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Issued {
    /// Reads a chain and key (PEM) and checks that they belong together and that the chain's leaf
    /// lists every one of `names`.
    fn from_pem(chain: &[u8], key: &[u8], names: &[String]) -> Result<Self, String> {
        let chain = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the chain is not valid PEM: {e}"))?;
        let leaf = chain.first().ok_or("no certificate in the chain")?;
        let (not_before, not_after) =
            crate::tls::validity(leaf).ok_or("the certificate's validity cannot be read")?;
        let listed: Vec<String> = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| format!("the certificate cannot be parsed: {e}"))?
            .valid_dns_names()
            .map(str::to_ascii_lowercase)
            .collect();
        if let Some(missing) = names.iter().find(|n| !listed.contains(n)) {
            return Err(format!("the certificate does not list {missing}"));
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("no key: {e}"))?;
        let signing = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("unusable key: {e}"))?;
        let key = CertifiedKey::new(chain, signing);
        match key.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => return Err("the key does not match the certificate".to_owned()),
        }
        Ok(Self {
            key: Arc::new(key),
            not_before,
            not_after,
        })
    }

    /// When to renew: when a third of the lifetime remains (Let's Encrypt's own advice for its
    /// 90-day certificates, 30 days before expiry).
    fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_after - lifetime / 3
    }

    fn expired(&self) -> bool {
        self.not_after <= SystemTime::now()
    }

    fn days_left(&self) -> u64 {
        self.not_after
            .duration_since(SystemTime::now())
            .map_or(0, |d| d.as_secs() / 86_400)
    }
}

/// The certificate stored for `names`, if there is a readable one.
fn load_stored(settings: &Settings, names: &[String]) -> Option<Arc<Issued>> {
    let dir = storage::set_dir(&settings.server_dir, names);
    match storage::read_certificate(&dir) {
        Ok(Some((chain, key))) => match Issued::from_pem(&chain, &key, names) {
            Ok(issued) => Some(Arc::new(issued)),
            Err(err) => {
                tracing::warn!(names = %names.join(","), dir = %dir.display(), error = %err, "ACME: the stored certificate is unusable; ordering a new one");
                None
            }
        },
        Ok(None) => None,
        Err(err) => {
            tracing::warn!(names = %names.join(","), dir = %dir.display(), error = %err, "ACME: cannot read the stored certificate; ordering a new one");
            None
        }
    }
}

/// The wait after `failures` failed orders in a row: `first`, doubling, up to an hour (or `first`
/// if longer).
fn backoff(first: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    first
        .saturating_mul(1u32 << doublings.min(20))
        .min(MAX_BACKOFF.max(first))
}

/// The life of one name set: obtain a certificate when there is none or it is due, and again and
/// again.
async fn maintain(
    shared: Arc<Shared>,
    settings: Arc<Settings>,
    names: NameSet,
    slot: Arc<CertSlot>,
    mut current: Option<Arc<Issued>>,
) {
    let label = names.join(",");
    let mut failures = 0u32;
    loop {
        if let Some(issued) = &current {
            match issued.renew_at().duration_since(SystemTime::now()) {
                Ok(wait) if !wait.is_zero() => {
                    tracing::debug!(names = %label, ?wait, "ACME: next renewal");
                    tokio::time::sleep(wait.min(MAX_SLEEP)).await;
                    continue;
                }
                _ => {
                    tracing::info!(names = %label, expires_in_days = issued.days_left(), "ACME certificate due for renewal")
                }
            }
        }
        tracing::info!(
            names = %label,
            directory = %settings.config.directory,
            challenge = settings.config.challenge.as_str(),
            "ACME order starting"
        );
        let result = order::obtain(&shared, &settings, &names).await;
        let metrics = crate::metrics::global();
        match result.map(|obtained| install(&shared, &settings, &names, &slot, obtained)) {
            Ok(Ok(issued)) => {
                metrics.acme_order(&label, "issued");
                tracing::info!(
                    names = %label,
                    expires_in_days = issued.days_left(),
                    "ACME certificate issued and serving"
                );
                failures = 0;
                current = Some(issued);
            }
            Ok(Err(err)) => {
                metrics.acme_order(&label, "failed");
                failures += 1;
                let retry_in = backoff(settings.config.retry, failures);
                tracing::error!(names = %label, error = %err, ?retry_in, "ACME order failed: the certificate issued is unusable");
                tokio::time::sleep(retry_in).await;
            }
            Err(err) => {
                metrics.acme_order(&label, "failed");
                failures += 1;
                let retry_in = backoff(settings.config.retry, failures);
                match err.problem() {
                    Some(problem) => tracing::error!(
                        names = %label,
                        step = err.step,
                        problem.r#type = problem.r#type.as_deref().unwrap_or(""),
                        problem.detail = problem.detail.as_deref().unwrap_or(""),
                        problem.status = problem.status.unwrap_or(0),
                        failures,
                        ?retry_in,
                        "ACME order failed: {problem}"
                    ),
                    None => tracing::error!(
                        names = %label,
                        step = err.step,
                        error = %parapet_middlewares::ErrorChain(&err.source),
                        failures,
                        ?retry_in,
                        "ACME order failed"
                    ),
                }
                tokio::time::sleep(retry_in).await;
            }
        }
    }
}

/// Checks, stores and serves a certificate just issued.
fn install(
    shared: &Shared,
    settings: &Settings,
    names: &[String],
    slot: &CertSlot,
    obtained: order::Obtained,
) -> Result<Arc<Issued>, String> {
    let issued = Arc::new(Issued::from_pem(
        obtained.chain_pem.as_bytes(),
        obtained.key_pem.as_bytes(),
        names,
    )?);
    let dir = storage::set_dir(&settings.server_dir, names);
    // Served even if it cannot be stored: the next start orders anew.
    if let Err(err) = storage::write_certificate(
        &dir,
        obtained.chain_pem.as_bytes(),
        obtained.key_pem.as_bytes(),
    ) {
        tracing::error!(names = %names.join(","), dir = %dir.display(), error = %err, "ACME: cannot store the certificate issued");
    }
    slot.store(Some(Arc::clone(&issued)));
    shared.publish_expiry();
    Ok(issued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_orders_back_off_doubling_up_to_an_hour() {
        let minute = Duration::from_secs(60);
        assert_eq!(backoff(minute, 1), minute);
        assert_eq!(backoff(minute, 2), 2 * minute);
        assert_eq!(backoff(minute, 4), 8 * minute);
        assert_eq!(backoff(minute, 7), MAX_BACKOFF);
        assert_eq!(backoff(minute, 1000), MAX_BACKOFF);
        let day = Duration::from_secs(86_400);
        assert_eq!(backoff(day, 3), day);
    }

    #[test]
    fn a_certificate_is_renewed_when_a_third_of_its_life_remains() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let issued = Issued::from_pem(
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            &["a.test".to_owned()],
        )
        .unwrap();
        let lifetime = issued.not_after.duration_since(issued.not_before).unwrap();
        assert_eq!(
            issued.not_after.duration_since(issued.renew_at()).unwrap(),
            lifetime / 3
        );
        assert!(
            Issued::from_pem(
                cert.pem().as_bytes(),
                key.serialize_pem().as_bytes(),
                &["b.test".to_owned()]
            )
            .is_err(),
            "a certificate not listing a name of the set is refused"
        );
    }

    /// The running tasks' ids, by name set.
    fn tasks(acme: &Acme) -> HashMap<String, tokio::task::Id> {
        let running = acme.running.lock().unwrap();
        running
            .tasks
            .iter()
            .map(|(names, task)| (names.join(","), task.id()))
            .collect()
    }

    fn two_sets(storage: &std::path::Path, challenge: &str) -> crate::Config {
        let toml = format!(
            r#"
[listeners.a]
bind = "127.0.0.1:0"
[listeners.a.tls]
acme = ["b.test", "a.test"]

[listeners.b]
bind = "127.0.0.1:0"
[listeners.b.tls]
acme = ["c.test"]

[listeners.plain]
bind = "127.0.0.1:0"

[acme]
directory = "https://127.0.0.1:1/dir"
storage = "{}"
challenge = "{challenge}"
retry = "1h"
"#,
            storage.display()
        );
        crate::Config::parse("test.toml", &toml, &crate::Registry::new()).unwrap()
    }

    #[tokio::test]
    async fn a_resync_keeps_running_orders_and_stops_those_of_names_removed() {
        let storage =
            std::env::temp_dir().join(format!("parapet-acme-sync-{}", std::process::id()));
        let config = two_sets(&storage, "tls-alpn-01");
        let settings = || Acme::prepare(config.acme.as_ref().unwrap()).unwrap();
        let acme = Acme::new();
        acme.sync(settings(), &config.listeners);
        let first = tasks(&acme);
        assert_eq!(first.len(), 2, "one task per name set: {first:?}");

        // A reload of the same config: the same tasks run on, none is started twice.
        acme.sync(settings(), &config.listeners);
        assert_eq!(tasks(&acme), first);

        // Listener b gone: its names stop renewing; a's task runs on.
        acme.sync(settings(), &config.listeners[..1]);
        let after = tasks(&acme);
        assert_eq!(after.len(), 1);
        assert_eq!(after["a.test,b.test"], first["a.test,b.test"]);

        // Another challenge: every task restarts with it.
        let http01 = two_sets(&storage, "http-01");
        acme.sync(
            Acme::prepare(http01.acme.as_ref().unwrap()).unwrap(),
            &http01.listeners,
        );
        let restarted = tasks(&acme);
        assert_eq!(restarted.len(), 2);
        assert_ne!(restarted["a.test,b.test"], first["a.test,b.test"]);

        acme.stop();
        assert!(tasks(&acme).is_empty());
        std::fs::remove_dir_all(&storage).unwrap();
    }

    #[test]
    fn a_name_set_is_the_same_in_any_order() {
        let a = name_set(&["b.test".to_owned(), "a.test".to_owned()]);
        let b = name_set(&["a.test".to_owned(), "b.test".to_owned()]);
        assert_eq!(a, b);
    }
}
