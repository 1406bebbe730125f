//! Accounts and credentials of the review console: argon2 password hashes, random session and
//! API tokens (stored as SHA-256, so a copied database holds no usable token), per-session CSRF
//! tokens, and the check every route runs on a request.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::http::{HeaderMap, Method, header};
use sha2::{Digest, Sha256};

use super::ReviewError;

/// The cookie that carries a browser session.
pub const SESSION_COOKIE: &str = "gw_session";
/// The header a cookie session must send with every state-changing request.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What an account may do: reviewers review; admins also export, read the audit log and manage
/// accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Reviewer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "reviewer" => Some(Role::Reviewer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A signed-in account.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub role: Role,
}

/// `count` random bytes from the operating system, hex-encoded.
pub fn random_token(bytes: usize) -> Result<String, ReviewError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| ReviewError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

/// What is stored for a token: its SHA-256 (tokens are 256 random bits; no salt needed).
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Slow on purpose (argon2id, tens of milliseconds of a core), like [`verify_password`]: the
/// console calls both on the blocking pool, a bounded number at a time.
pub fn hash_password(password: &str) -> Result<String, ReviewError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| ReviewError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ReviewError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ReviewError::Hash(e.to_string()))
}

pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Equal strings, compared in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// How a request presents itself.
pub enum Credential {
    Bearer(String),
    Session(String),
    None,
}

pub fn credential(headers: &HeaderMap) -> Credential {
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Credential::Bearer(token.trim().to_owned());
    }
    let session = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned());
    match session {
        Some(s) => Credential::Session(s),
        None => Credential::None,
    }
}

/// Requests that change state need the CSRF header when they come with a cookie.
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub fn csrf_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok())
}

/// `Set-Cookie` for a new session: HttpOnly (no script reads it), SameSite=Strict (no other
/// site sends it).
pub fn session_cookie(token: &str, max_age_seconds: i64) -> String {
    format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_seconds}"
    )
}

pub fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("correct horse", "not a hash"));
    }
}
