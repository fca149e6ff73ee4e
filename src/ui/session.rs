//! Status page sessions: a random id in an HttpOnly cookie, a CSRF token
//! for its forms, a fixed lifetime and a cap on how many live at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Flash;

/// A session lives this long from login, whatever it does.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Sessions at most; a login beyond it ends the oldest.
pub const MAX_SESSIONS: usize = 32;
/// Random bytes in a session id and in a CSRF token.
const SECRET_BYTES: usize = 32;

/// One logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The cookie's value.
    pub id: String,
    /// The token every form of this session carries.
    pub csrf: String,
    /// Who acts, for history ("ui" unless a name was given at login).
    pub actor: String,
    /// When it ends.
    pub expires: Instant,
    /// The last action's outcome, shown once.
    flash: Option<Flash>,
}

/// Every live session by id.
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: HashMap<String, Session>,
}

/// `SECRET_BYTES` random bytes in hex.
fn secret() -> Result<String, String> {
    let mut b = [0u8; SECRET_BYTES];
    getrandom::fill(&mut b).map_err(|e| format!("cannot make a session id: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl Sessions {
    /// A new session for `actor`; the oldest goes if [`MAX_SESSIONS`] live.
    pub fn create(&mut self, actor: String, now: Instant) -> Result<Session, String> {
        self.by_id.retain(|_, s| s.expires > now);
        while self.by_id.len() >= MAX_SESSIONS {
            let oldest = self
                .by_id
                .values()
                .min_by_key(|s| s.expires)
                .map(|s| s.id.clone());
            match oldest {
                Some(id) => self.by_id.remove(&id),
                None => break,
            };
        }
        let s = Session {
            id: secret()?,
            csrf: secret()?,
            actor,
            expires: now + LIFETIME,
            flash: None,
        };
        self.by_id.insert(s.id.clone(), s.clone());
        Ok(s)
    }

    /// The session `id`, if it lives.
    pub fn get(&mut self, id: &str, now: Instant) -> Option<Session> {
        match self.by_id.get(id) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                self.by_id.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn remove(&mut self, id: &str) {
        self.by_id.remove(id);
    }

    /// Keeps an action's outcome for the session's next page.
    pub fn set_flash(&mut self, id: &str, flash: Flash) {
        if let Some(s) = self.by_id.get_mut(id) {
            s.flash = Some(flash);
        }
    }

    /// The outcome kept, once.
    pub fn take_flash(&mut self, id: &str) -> Option<Flash> {
        self.by_id.get_mut(id).and_then(|s| s.flash.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_are_capped() {
        let mut all = Sessions::default();
        let t0 = Instant::now();
        let first = all.create("a".into(), t0).unwrap();
        assert_eq!(first.id.len(), 64);
        assert_ne!(first.id, first.csrf);
        assert!(all.get(&first.id, t0).is_some());
        assert!(all.get(&first.id, t0 + LIFETIME).is_none(), "expired");
        let ids: Vec<String> = (0..MAX_SESSIONS as u64 + 1)
            .map(|i| {
                all.create("a".into(), t0 + Duration::from_secs(i))
                    .unwrap()
                    .id
            })
            .collect();
        assert_eq!(all.by_id.len(), MAX_SESSIONS);
        assert!(all.get(&ids[0], t0).is_none(), "the oldest went");
        assert!(all.get(&ids[MAX_SESSIONS], t0).is_some());
    }

    #[test]
    fn a_flash_is_shown_once() {
        let mut all = Sessions::default();
        let s = all.create("a".into(), Instant::now()).unwrap();
        all.set_flash(
            &s.id,
            Flash {
                ok: false,
                text: "no".into(),
            },
        );
        assert_eq!(all.take_flash(&s.id).map(|f| f.text).as_deref(), Some("no"));
        assert!(all.take_flash(&s.id).is_none());
    }
}
