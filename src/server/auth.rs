//! Bearer tokens: who may call which service, checked in one place for
//! every call (`authorization: Bearer <token>`). Scoring tokens open
//! `RiskScorer`, admin tokens open `RiskAdmin`; health and reflection need
//! none. Tokens are kept as SHA-256 digests and looked up by digest, so the
//! time a check takes tells nothing of a token; they are never logged.
//! Token files (one token per line) are read again when they change.

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// Which service a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `RiskScorer`: payment backends.
    Scoring,
    /// `RiskAdmin`: the fraud team and operators.
    Admin,
}

impl Role {
    fn service(self) -> &'static str {
        match self {
            Role::Scoring => "riskstream.v1.RiskScorer",
            Role::Admin => "riskstream.v1.RiskAdmin",
        }
    }
}

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// It cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It holds no token.
    #[error("{0} holds no token (one token per line; lines starting with # are comments)")]
    Empty(PathBuf),
    /// A token is too short to be a secret.
    #[error("{path}: line {line} holds a token of fewer than {MIN_TOKEN_LEN} characters")]
    Short {
        /// The file.
        path: PathBuf,
        /// Its line (from 1).
        line: usize,
    },
}

/// The shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// How often token files are checked for changes.
const POLL: Duration = Duration::from_secs(2);

type TokenDigest = [u8; 32];

fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// The tokens of one file.
#[derive(Debug, Default)]
struct TokenSet(HashSet<TokenDigest>);

impl TokenSet {
    fn load(path: &Path) -> Result<TokenSet, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut set = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if t.len() < MIN_TOKEN_LEN {
                return Err(TokenError::Short {
                    path: path.to_owned(),
                    line: i + 1,
                });
            }
            set.insert(digest(t));
        }
        if set.is_empty() {
            return Err(TokenError::Empty(path.to_owned()));
        }
        Ok(TokenSet(set))
    }
}

/// One role's tokens and the file they come from.
#[derive(Debug)]
struct Source {
    path: PathBuf,
    tokens: ArcSwap<TokenSet>,
}

/// Who may call what. Without a file for a role, its service is open (the
/// configuration allows that on loopback addresses only, or with
/// `--insecure`).
#[derive(Debug, Default)]
pub struct Auth {
    scoring: Option<Source>,
    admin: Option<Source>,
}

impl Auth {
    /// Reads the token files given.
    pub fn load(scoring: Option<&Path>, admin: Option<&Path>) -> Result<Auth, TokenError> {
        let source = |p: Option<&Path>| -> Result<Option<Source>, TokenError> {
            p.map(|path| {
                Ok(Source {
                    path: path.to_owned(),
                    tokens: ArcSwap::from_pointee(TokenSet::load(path)?),
                })
            })
            .transpose()
        };
        Ok(Auth {
            scoring: source(scoring)?,
            admin: source(admin)?,
        })
    }

    /// Whether calls to `role`'s service need a token.
    pub fn guards(&self, role: Role) -> bool {
        self.source(role).is_some()
    }

    fn source(&self, role: Role) -> Option<&Source> {
        match role {
            Role::Scoring => self.scoring.as_ref(),
            Role::Admin => self.admin.as_ref(),
        }
    }

    /// Whether `metadata` carries a token that opens `role`'s service:
    /// `UNAUTHENTICATED` without a token or with an unknown one,
    /// `PERMISSION_DENIED` with a token of the other service.
    pub fn check(&self, role: Role, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(source) = self.source(role) else {
            return Ok(());
        };
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "{} needs an `authorization: Bearer <token>` header",
                    role.service()
                ))
            })?;
        let d = digest(token);
        if source.tokens.load().0.contains(&d) {
            return Ok(());
        }
        let other = match role {
            Role::Scoring => Role::Admin,
            Role::Admin => Role::Scoring,
        };
        if self
            .source(other)
            .is_some_and(|s| s.tokens.load().0.contains(&d))
        {
            return Err(Status::permission_denied(format!(
                "this token does not open {}",
                role.service()
            )));
        }
        Err(Status::unauthenticated("unknown token"))
    }

    /// Reads the token files again when they change, until `stop`: a file
    /// that no longer loads is logged and its tokens stay as they were.
    pub async fn watch(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let stamp = |p: &Path| -> Option<(SystemTime, u64)> {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        };
        let sources: Vec<(Role, &Source)> = [Role::Scoring, Role::Admin]
            .into_iter()
            .filter_map(|r| self.source(r).map(|s| (r, s)))
            .collect();
        let mut last: Vec<_> = sources.iter().map(|(_, s)| stamp(&s.path)).collect();
        let mut tick = tokio::time::interval(POLL);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = &mut stop => return,
            }
            for ((role, source), seen) in sources.iter().zip(last.iter_mut()) {
                let now = stamp(&source.path);
                if now == *seen {
                    continue;
                }
                *seen = now;
                let path = source.path.clone();
                match tokio::task::spawn_blocking(move || TokenSet::load(&path)).await {
                    Ok(Ok(set)) => {
                        let n = set.0.len();
                        source.tokens.store(Arc::new(set));
                        tracing::info!(service = role.service(), tokens = n, "tokens reloaded");
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "token file not reloaded; the tokens loaded stay")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "token reload failed; the tokens loaded stay")
                    }
                }
            }
        }
    }
}

/// The check of one service's calls, as a tonic interceptor.
#[derive(Debug, Clone)]
pub struct Guard {
    auth: Arc<Auth>,
    role: Role,
}

impl Guard {
    /// Checks the calls of `role`'s service against `auth`.
    pub fn new(auth: Arc<Auth>, role: Role) -> Guard {
        Guard { auth, role }
    }
}

impl tonic::service::Interceptor for Guard {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.auth.check(self.role, request.metadata())?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(token: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(t) = token
            && let Ok(v) = format!("Bearer {t}").parse()
        {
            m.insert("authorization", v);
        }
        m
    }

    #[test]
    fn tokens_open_their_own_service_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let scoring = dir.path().join("scoring");
        let admin = dir.path().join("admin");
        std::fs::write(&scoring, "# backends\nscoring-token-0123456789\n\n").expect("write");
        std::fs::write(&admin, "admin-token-0123456789abc\n").expect("write");
        let auth = Auth::load(Some(&scoring), Some(&admin)).expect("loads");
        let code = |role, token| {
            auth.check(role, &metadata(token))
                .err()
                .map(|s: Status| s.code())
        };
        assert_eq!(code(Role::Scoring, Some("scoring-token-0123456789")), None);
        assert_eq!(code(Role::Admin, Some("admin-token-0123456789abc")), None);
        assert_eq!(
            code(Role::Admin, Some("scoring-token-0123456789")),
            Some(tonic::Code::PermissionDenied)
        );
        assert_eq!(
            code(Role::Scoring, Some("admin-token-0123456789abc")),
            Some(tonic::Code::PermissionDenied)
        );
        assert_eq!(
            code(Role::Scoring, Some("guessed-token-0000000000")),
            Some(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            code(Role::Scoring, None),
            Some(tonic::Code::Unauthenticated)
        );
        std::fs::write(&admin, "short\n").expect("write");
        assert!(matches!(
            Auth::load(None, Some(&admin)),
            Err(TokenError::Short { line: 1, .. })
        ));
        std::fs::write(&admin, "# nothing\n").expect("write");
        assert!(matches!(
            Auth::load(None, Some(&admin)),
            Err(TokenError::Empty(_))
        ));
        let open = Auth::load(None, None).expect("no files");
        assert!(open.check(Role::Admin, &metadata(None)).is_ok());
    }
}
