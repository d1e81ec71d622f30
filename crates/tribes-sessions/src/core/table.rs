//! The sessions one core holds, with the principal index kept beside them: every change
//! goes through [`SessionTable::insert`], [`SessionTable::remove`] or the guard of
//! [`SessionTable::get_mut`], which re-reads the session's principal when it is dropped,
//! so no code path can change a session and leave the index behind.
//!
//! The same paths share attribute names: every session holding a `cart` points at one
//! `cart` string (one allocation per name, not one per session and name).

use std::collections::hash_map::{Keys, Values};
use std::collections::{HashMap, HashSet};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crate::data::SessionData;
use crate::id::SessionId;
use crate::principal::PrincipalIndex;

#[derive(Default)]
pub(crate) struct SessionTable {
    map: HashMap<SessionId, SessionData>,
    index: PrincipalIndex,
    /// Sessions that got a principal since the last [`SessionTable::take_fresh`] (the
    /// core checks them against the logouts it knows).
    fresh: Vec<SessionId>,
    names: Names,
}

/// The attribute names of the sessions held, one string each.
#[derive(Default)]
struct Names {
    set: HashSet<Arc<str>>,
    /// The size after the last sweep of names no session uses any more.
    swept: usize,
}

impl Names {
    /// Points `data`'s attribute names at the shared strings. A name already shared has
    /// more than one owner and is skipped without a lookup.
    fn share(&mut self, data: &mut SessionData) {
        for a in &mut data.attrs {
            if Arc::strong_count(&a.name) > 1 {
                continue;
            }
            match self.set.get(&a.name) {
                Some(shared) => a.name = shared.clone(),
                None => {
                    self.set.insert(a.name.clone());
                }
            }
        }
        if self.set.len() > 2 * self.swept + 64 {
            // Names only this table still holds (their sessions are gone).
            self.set.retain(|n| Arc::strong_count(n) > 1);
            self.swept = self.set.len();
        }
    }
}

/// A session borrowed for a change; the index is brought up to date when it is dropped.
pub(crate) struct EntryMut<'a> {
    data: &'a mut SessionData,
    index: &'a mut PrincipalIndex,
    fresh: &'a mut Vec<SessionId>,
    names: &'a mut Names,
}

impl Deref for EntryMut<'_> {
    type Target = SessionData;
    fn deref(&self) -> &SessionData {
        self.data
    }
}

impl DerefMut for EntryMut<'_> {
    fn deref_mut(&mut self) -> &mut SessionData {
        self.data
    }
}

impl Drop for EntryMut<'_> {
    fn drop(&mut self) {
        self.names.share(self.data);
        if self.index.update(self.data) {
            self.fresh.push(self.data.id);
        }
    }
}

impl SessionTable {
    pub(crate) fn get(&self, id: &SessionId) -> Option<&SessionData> {
        self.map.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &SessionId) -> Option<EntryMut<'_>> {
        let data = self.map.get_mut(id)?;
        Some(EntryMut {
            data,
            index: &mut self.index,
            fresh: &mut self.fresh,
            names: &mut self.names,
        })
    }

    pub(crate) fn insert(&mut self, id: SessionId, mut data: SessionData) -> Option<SessionData> {
        debug_assert_eq!(id, data.id);
        self.names.share(&mut data);
        if self.index.update(&data) {
            self.fresh.push(id);
        }
        self.map.insert(id, data)
    }

    pub(crate) fn remove(&mut self, id: &SessionId) -> Option<SessionData> {
        self.index.remove(id);
        self.map.remove(id)
    }

    pub(crate) fn contains_key(&self, id: &SessionId) -> bool {
        self.map.contains_key(id)
    }

    pub(crate) fn keys(&self) -> Keys<'_, SessionId, SessionData> {
        self.map.keys()
    }

    pub(crate) fn values(&self) -> Values<'_, SessionId, SessionData> {
        self.map.values()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.map.capacity()
    }

    pub(crate) fn index(&self) -> &PrincipalIndex {
        &self.index
    }

    /// Whether the index equals the principals of the sessions held (the simulation
    /// checks it after every heal).
    #[cfg(test)]
    pub(crate) fn check_index(&self) -> Result<(), String> {
        use crate::principal::PrincipalRecord;
        let mut want: std::collections::BTreeMap<String, Vec<SessionId>> = Default::default();
        for d in self.map.values() {
            if let Some(r) = PrincipalRecord::of(d) {
                want.entry(r.name).or_default().push(d.id);
            }
        }
        for (p, ids) in &mut want {
            ids.sort();
            let have = self.index.ids_of(p);
            if &have != ids {
                return Err(format!(
                    "the principal index of '{p}' lists {have:?}, the sessions held say {ids:?}"
                ));
            }
        }
        let counts = self.index.counts();
        if counts.len() != want.len() {
            return Err(format!(
                "the principal index has {counts:?}, the sessions held say {want:?}"
            ));
        }
        Ok(())
    }

    /// The sessions that got a principal since the last call.
    pub(crate) fn take_fresh(&mut self) -> Vec<SessionId> {
        std::mem::take(&mut self.fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Blob, Stamp};
    use crate::principal::{PRINCIPAL_ATTRIBUTE, PrincipalRecord};

    #[test]
    fn every_way_of_changing_a_session_keeps_the_index() {
        let mut table = SessionTable::default();
        let id = SessionId::from_bytes([1; 16]);
        table.insert(id, SessionData::new(id, "a".into(), 0, 1000));
        assert!(table.take_fresh().is_empty());
        let value = PrincipalRecord {
            name: "alice".into(),
            since_ms: 3,
        }
        .encode();
        table.get_mut(&id).expect("held").write_attr(
            PRINCIPAL_ATTRIBUTE,
            Some(Blob(value.into())),
            Stamp { version: 1, writer: 1 },
        );
        assert_eq!(table.index().ids_of("alice"), vec![id]);
        assert_eq!(table.take_fresh(), vec![id]);
        // An id change is a remove and an insert.
        let mut moved = table.remove(&id).expect("held");
        assert!(table.index().ids_of("alice").is_empty());
        let new = SessionId::from_bytes([2; 16]);
        moved.id = new;
        table.insert(new, moved);
        assert_eq!(table.index().ids_of("alice"), vec![new]);
        table.remove(&new);
        assert!(table.index().ids_of("alice").is_empty());
    }

    #[test]
    fn sessions_share_one_string_per_attribute_name_and_unused_names_are_swept() {
        let mut table = SessionTable::default();
        let stamp = Stamp { version: 1, writer: 1 };
        for i in 0..200u8 {
            let id = SessionId::from_bytes([i; 16]);
            table.insert(id, SessionData::new(id, "a".into(), 0, 1000));
            // Each write brings its own copy of the name, as a request or a delta does.
            table
                .get_mut(&id)
                .expect("held")
                .write_attr("cart", Some(Blob(vec![i].into())), stamp);
        }
        let names: Vec<&Arc<str>> = table.values().map(|d| &d.attrs[0].name).collect();
        assert!(names.windows(2).all(|w| Arc::ptr_eq(w[0], w[1])), "one string per name");
        // Names nobody uses any more do not pile up.
        for i in 0..200u8 {
            table.remove(&SessionId::from_bytes([i; 16]));
        }
        for i in 0..200u8 {
            let id = SessionId::from_bytes([i; 16]);
            let mut d = SessionData::new(id, "a".into(), 0, 1000);
            d.write_attr(&format!("item-{i}"), Some(Blob(vec![i].into())), stamp);
            table.insert(id, d);
            table.remove(&id);
        }
        assert!(table.names.set.len() < 150, "{} names kept", table.names.set.len());
    }
}
