//! The random requests of the simulation: create, write, read or invalidate a session on a
//! random serving node, checked against the oracle of acknowledged writes.

use super::*;

impl Sim {
    /// One request to a random serving node: create, write, read or invalidate.
    pub(super) fn client_op(&mut self) -> Result<(), String> {
        let serving: Vec<usize> = (0..self.nodes.len())
            .filter(|s| self.nodes[*s].as_ref().is_some_and(Node::is_serving))
            .collect();
        if serving.is_empty() {
            return Ok(());
        }
        let slot = serving[self.rng.random_range(0..serving.len())];
        let now = self.now;
        let roll = self.rng.random_range(0..100);
        let known: Vec<SessionId> = self
            .oracle
            .sessions
            .keys()
            .filter(|id| {
                !self.oracle.invalidated.contains(id)
                    && !self.oracle.expired.contains(id)
                    && !self.client_sessions.contains(id)
            })
            .copied()
            .collect();
        if roll < 15 || known.is_empty() {
            let id = SessionId::generate(&mut self.rng);
            let node = self.nodes[slot].as_mut().expect("live");
            ensure!(node.is_serving(), "a request reached {} before it was ready", node.id);
            let route: Arc<str> = Arc::from(format!("slot{slot}"));
            node.core_mut().create(now, id, route).map_err(|e| e.to_string())?;
            let me = node.id;
            self.oracle.sessions.insert(id, now);
            self.oracle.access_holders.insert(id, vec![me]);
            let value = self.value();
            return self.write(slot, id, vec![Op::Set("a".into(), value)]);
        }
        let id = known[self.rng.random_range(0..known.len())];
        let node = self.nodes[slot].as_mut().expect("live");
        let Some(data) = node.core().get(now, &id) else {
            if matches!(self.cfg.kind, ManagerKind::Backup { .. }) {
                // `SessionManager::get` fetches from the holders; nobody waits for this one.
                let me = node.id;
                node.session.begin_fetch(clocks(now), id, UNWAITED_FETCH);
                return self.run_outputs(me);
            }
            return Ok(());
        };
        if roll < 30 {
            let me = node.id;
            let previous = data.last_access_ms;
            node.core_mut().touch(now, &id);
            self.oracle.sessions.insert(id, now);
            self.oracle.access_holders.insert(id, vec![me]);
            return self.store_touch(me, id, previous);
        }
        if roll < 34 {
            self.oracle.invalidated.insert(id);
            return self.write(slot, id, vec![Op::Invalidate]);
        }
        if roll < 38 {
            return self.login(slot, id);
        }
        if roll < 40 {
            return self.logout_everywhere(slot);
        }
        if self.cfg.filter && self.rng.random_bool(0.2) {
            let value = self.value();
            return self.write(slot, id, vec![Op::Set(super::filter::LOCAL.into(), value)]);
        }
        let name = ATTRS[self.rng.random_range(0..ATTRS.len())];
        let op = if self.rng.random_bool(0.1) {
            Op::Remove(name.into())
        } else {
            Op::Set(name.into(), self.value())
        };
        self.write(slot, id, vec![op])
    }

    pub(super) fn value(&mut self) -> Blob {
        self.oracle.writes += 1;
        Blob(self.oracle.writes.to_le_bytes().to_vec().into())
    }

    /// `SessionManager::commit`: apply locally, then send (sync-ack or async).
    pub(super) fn write(&mut self, slot: usize, id: SessionId, ops: Vec<Op>) -> Result<(), String> {
        let now = self.now;
        let node = self.nodes[slot].as_mut().expect("live");
        let me = node.id;
        let base = node.core().get(now, &id).map_or(0, |d| d.version);
        let names: Vec<&'static str> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Set(k, _) | Op::Remove(k) => ATTRS.iter().copied().find(|a| **a == **k),
                _ => None,
            })
            .collect();
        let mut out = Vec::new();
        let commit = match node.core_mut().commit(now, id, base, ops, false, &mut out) {
            Ok(c) => c,
            Err(_) => return Ok(()), // destroyed meanwhile: nothing written
        };
        self.oracle.sessions.insert(id, now);
        self.oracle.access_holders.insert(id, vec![me]);
        self.perform(me, out)?;
        let store = match commit.sends.is_empty() {
            true => Vec::new(),
            false => self.store_commit(me, id, commit.data.as_ref().map(|d| d.id), base),
        };
        let parts: Vec<(Vec<MemberId>, Msg)> = commit
            .sends
            .into_iter()
            .map(|(mut to, msg)| {
                to.sort();
                (to, msg)
            })
            .collect();
        if parts.is_empty() {
            return self.store_ops(me, store);
        }
        let stamp = Stamp {
            version: commit.data.as_ref().map_or(base + 1, |d| d.version),
            writer: writer_of(me),
        };
        // The members that hold the write once acked: those sent the change or the session.
        let holders = holders_of(&parts, me);
        if self.rng.random_bool(0.5) {
            let purpose = match names.first() {
                Some(name) if commit.data.is_some() => Purpose::Write(AckedWrite {
                    id,
                    name,
                    stamp,
                    at_ms: now,
                    holders,
                }),
                _ => Purpose::Done,
            };
            self.send_commit(me, parts, purpose, store);
        } else {
            for (to, msg) in parts {
                for m in to {
                    self.send(
                        me,
                        m,
                        Body::Msg {
                            topic: Topic::Main,
                            msg: msg.clone(),
                            ack: None,
                        },
                    );
                }
            }
            self.store_ops(me, store)?;
        }
        Ok(())
    }
}
