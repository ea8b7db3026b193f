//! One ACME order (RFC 8555 §7.4), from the new order to the certificate: each authorization's
//! challenge published and marked ready, the order polled until it is ready, finalized with a CSR
//! for a fresh key, and the chain downloaded.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, Problem, RetryPolicy,
};

use super::challenge::{tls_alpn01_certificate, Published};
use super::{storage, Settings, Shared};
use crate::config::AcmeChallenge;

/// How long the ACME server may take to validate the challenges, and to issue once finalized.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(120));

/// Why an order failed: the step, and the ACME problem document if the server sent one.
#[derive(Debug)]
pub(super) struct OrderError {
    /// What was being done.
    pub(super) step: &'static str,
    /// What went wrong.
    pub(super) source: instant_acme::Error,
}

impl OrderError {
    fn at(step: &'static str) -> impl FnOnce(instant_acme::Error) -> OrderError {
        move |source| OrderError { step, source }
    }

    /// The ACME problem document (RFC 8555 §6.7) the server answered with, if any.
    pub(super) fn problem(&self) -> Option<&Problem> {
        match &self.source {
            instant_acme::Error::Api(problem) => Some(problem),
            _ => None,
        }
    }
}

impl std::fmt::Display for OrderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.source)
    }
}

/// A certificate just issued: its chain and key, as PEM.
pub(super) struct Obtained {
    pub(super) chain_pem: String,
    pub(super) key_pem: String,
}

/// The problem type of an account the ACME server does not know (RFC 8555 §6.7).
const ACCOUNT_DOES_NOT_EXIST: &str = "urn:ietf:params:acme:error:accountDoesNotExist";

/// Runs one order for `names` to its end. An account the server no longer knows (a test server
/// restarted, an account deactivated elsewhere) is forgotten and a new one made, once.
pub(super) async fn obtain(
    shared: &Shared,
    settings: &Settings,
    names: &[String],
) -> Result<Obtained, OrderError> {
    match place(shared, settings, names).await {
        Err(err)
            if err
                .problem()
                .is_some_and(|p| p.r#type.as_deref() == Some(ACCOUNT_DOES_NOT_EXIST)) =>
        {
            let path = settings.server_dir.join("account.json");
            tracing::warn!(
                directory = %settings.config.directory,
                file = %path.display(),
                "ACME: the server does not know the stored account; making a new one"
            );
            *settings.account.lock().await = None;
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "ACME: cannot remove the unknown account");
            }
            place(shared, settings, names).await
        }
        result => result,
    }
}

/// One attempt at an order for `names`.
async fn place(
    shared: &Shared,
    settings: &Settings,
    names: &[String],
) -> Result<Obtained, OrderError> {
    let account = account(settings).await?;
    let identifiers: Vec<Identifier> = names.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(OrderError::at("new order"))?;
    tracing::info!(names = %names.join(","), order = order.url(), "ACME order created");

    // Each answer stays published until the order is done, whatever its end.
    let mut published: Vec<Published> = Vec::with_capacity(names.len());
    let challenge_type = match settings.config.challenge {
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(OrderError::at("authorization"))?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            // Proven lately for this account: nothing to answer.
            AuthorizationStatus::Valid => continue,
            status => {
                return Err(OrderError {
                    step: "authorization",
                    source: format!("the authorization is {status:?}").into_error(),
                })
            }
        }
        let name = authz.identifier().to_string();
        let Some(mut challenge) = authz.challenge(challenge_type.clone()) else {
            return Err(OrderError {
                step: "challenge",
                source: format!(
                    "the ACME server offers no {} challenge for {name}",
                    settings.config.challenge.as_str()
                )
                .into_error(),
            });
        };
        let key_authorization = challenge.key_authorization();
        match settings.config.challenge {
            AcmeChallenge::Http01 => {
                published.push(
                    shared
                        .challenges
                        .publish_http01(&challenge.token, key_authorization.as_str()),
                );
            }
            AcmeChallenge::TlsAlpn01 => {
                let certificate =
                    tls_alpn01_certificate(&name, key_authorization.digest().as_ref()).map_err(
                        |e| OrderError {
                            step: "challenge certificate",
                            source: e.into_error(),
                        },
                    )?;
                published.push(
                    shared
                        .challenges
                        .publish_tls_alpn01(&name, Arc::new(certificate)),
                );
            }
        }
        tracing::debug!(
            name,
            challenge = settings.config.challenge.as_str(),
            "ACME challenge published"
        );
        challenge
            .set_ready()
            .await
            .map_err(OrderError::at("challenge"))?;
    }

    let status = order
        .poll_ready(&POLL)
        .await
        .map_err(OrderError::at("validation"))?;
    if status != OrderStatus::Ready {
        // The reason is in the failed challenge's problem document.
        let mut problem = None;
        let mut authorizations = order.authorizations();
        while let Some(Ok(mut authz)) = authorizations.next().await {
            if let Ok(state) = authz.refresh().await {
                problem = problem.or_else(|| state.challenges.iter().find_map(|c| c.error.clone()));
            }
        }
        let source = match problem {
            Some(problem) => instant_acme::Error::Api(problem),
            None => format!("the order is {status:?}").into_error(),
        };
        return Err(OrderError {
            step: "validation",
            source,
        });
    }
    drop(published);

    let key = rcgen::KeyPair::generate().map_err(|e| OrderError {
        step: "key",
        source: e.to_string().into_error(),
    })?;
    let csr = rcgen::CertificateParams::new(names.to_vec())
        .and_then(|mut params| {
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.serialize_request(&key)
        })
        .map_err(|e| OrderError {
            step: "CSR",
            source: e.to_string().into_error(),
        })?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(OrderError::at("finalize"))?;
    let chain_pem = order
        .poll_certificate(&POLL)
        .await
        .map_err(OrderError::at("certificate"))?;
    Ok(Obtained {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

/// The account of `settings`' directory: the one already in use, else the one stored, else a new
/// one, created and stored.
async fn account(settings: &Settings) -> Result<Account, OrderError> {
    let mut cached = settings.account.lock().await;
    if let Some(account) = &*cached {
        return Ok(account.clone());
    }
    let path = settings.server_dir.join("account.json");
    let stored = match std::fs::read(&path) {
        Ok(json) => Some(
            serde_json::from_slice::<AccountCredentials>(&json).map_err(|e| OrderError {
                step: "account",
                source: format!("{}: unreadable: {e}", path.display()).into_error(),
            })?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(OrderError {
                step: "account",
                source: format!("{}: {e}", path.display()).into_error(),
            })
        }
    };
    let builder = Account::builder_with_http(Box::new(settings.http()));
    let account = match stored {
        Some(credentials) => builder
            .from_credentials(credentials)
            .await
            .map_err(OrderError::at("account"))?,
        None => {
            let contact = settings
                .config
                .email
                .as_ref()
                .map(|email| format!("mailto:{email}"));
            let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
            let (account, credentials) = builder
                .create(
                    &NewAccount {
                        contact: &contacts,
                        terms_of_service_agreed: true,
                        only_return_existing: false,
                    },
                    settings.config.directory.clone(),
                    None,
                )
                .await
                .map_err(OrderError::at("new account"))?;
            let json = serde_json::to_vec_pretty(&credentials).map_err(|e| OrderError {
                step: "account",
                source: instant_acme::Error::Json(e),
            })?;
            storage::write_private(&path, &json).map_err(|e| OrderError {
                step: "account",
                source: format!("{}: cannot store the account: {e}", path.display()).into_error(),
            })?;
            tracing::info!(
                directory = %settings.config.directory,
                account = account.id(),
                "ACME account created"
            );
            account
        }
    };
    *cached = Some(account.clone());
    Ok(account)
}

/// A message as an [`instant_acme::Error`].
trait IntoError {
    fn into_error(self) -> instant_acme::Error;
}

impl IntoError for String {
    fn into_error(self) -> instant_acme::Error {
        instant_acme::Error::Other(self.into())
    }
}
