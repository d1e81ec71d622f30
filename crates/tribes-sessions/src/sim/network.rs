//! The simulated network: sends that may be lost, delayed, duplicated or cut by a
//! partition; sync-ack sends and the outcome each sender sees (acked, refused, timed out).

use super::*;

impl Sim {
    pub(super) fn send(&mut self, from: MemberId, to: MemberId, body: Body) {
        self.stats.packets += 1;
        if let Body::Msg {
            topic: Topic::Main,
            msg,
            ..
        } = &body
            && let Err(e) = self.check_filtered(from, msg)
        {
            self.violation.get_or_insert(e);
        }
        if self.chaos && self.rng.random_bool(self.cfg.loss) {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.chaos && self.rng.random_bool(self.cfg.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.chaos && self.cfg.max_delay_ms > 0 {
                self.rng.random_range(0..=self.cfg.max_delay_ms)
            } else {
                0
            };
            self.seq += 1;
            self.in_flight.push(Packet {
                at: self.now + delay,
                seq: self.seq,
                from,
                to,
                body: body.clone(),
            });
        }
    }

    /// A sync-ack send on the second context's topic.
    pub(super) fn send_sync_second(&mut self, from: MemberId, parts: Vec<(Vec<MemberId>, Msg)>, purpose: Purpose) {
        self.send_on(Topic::Second, from, parts, purpose, Vec::new());
    }

    /// A commit's sync-ack send: `store` runs when it returns, before its purpose is decided.
    pub(super) fn send_commit(
        &mut self,
        from: MemberId,
        parts: Vec<(Vec<MemberId>, Msg)>,
        purpose: Purpose,
        store: Vec<crate::persistence::StoreOp>,
    ) {
        self.send_on(Topic::Main, from, parts, purpose, store);
    }

    pub(super) fn send_on(
        &mut self,
        topic: Topic,
        from: MemberId,
        parts: Vec<(Vec<MemberId>, Msg)>,
        purpose: Purpose,
        store: Vec<crate::persistence::StoreOp>,
    ) {
        self.next_token += 1;
        let token = self.next_token;
        let waiting: BTreeSet<MemberId> = parts.iter().flat_map(|(to, _)| to.iter().copied()).collect();
        let empty = waiting.is_empty();
        self.pending.insert(
            token,
            Pending {
                owner: from,
                waiting,
                error: None,
                deadline: self.now + ACK_TIMEOUT_MS,
                purpose,
                store,
            },
        );
        for (to, msg) in parts {
            for m in to {
                self.send(
                    from,
                    m,
                    Body::Msg {
                        topic,
                        msg: msg.clone(),
                        ack: Some(token),
                    },
                );
            }
        }
        if empty {
            self.resolve(token);
        }
    }

    pub(super) fn deliver(&mut self) -> Result<(), String> {
        let now = self.now;
        let mut due: Vec<Packet> = Vec::new();
        self.in_flight.retain(|p| {
            if p.at <= now {
                due.push(p.clone());
                false
            } else {
                true
            }
        });
        due.sort_by_key(|p| (p.at, p.seq));
        for p in due {
            let (Some(a), Some(b)) = (self.slot_of(p.from), self.slot_of(p.to)) else {
                continue; // sender or receiver crashed: the connection is gone
            };
            if !self.connected(a, b) {
                continue;
            }
            match p.body {
                Body::Ack { token, result } => self.on_ack(token, p.from, result),
                Body::Msg { topic, msg, ack } => {
                    if self.trace {
                        let mut m = format!("{msg:?}");
                        m.truncate(
                            std::env::var("TRIBES_SIM_TRACE_WIDTH")
                                .ok()
                                .and_then(|w| w.parse().ok())
                                .unwrap_or(160),
                        );
                        self.trace(|| format!("{} -> {} ({topic:?}): {m}", p.from, p.to));
                    }
                    if let Msg::FetchReply(d) = &msg {
                        self.fetch_replies.insert((p.to, d.id), self.now);
                    }
                    let result = match topic {
                        Topic::Main => self.on_msg(p.to, p.from, msg)?,
                        Topic::Second => self.on_second_msg(p.to, p.from, msg)?,
                    };
                    if let Some(token) = ack {
                        self.send(p.to, p.from, Body::Ack { token, result });
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn on_ack(&mut self, token: u64, from: MemberId, result: Delivered) {
        let Some(p) = self.pending.get_mut(&token) else { return };
        if p.waiting.remove(&from) {
            if result != Delivered::Acked {
                p.error.get_or_insert(result);
            }
            if p.waiting.is_empty() {
                self.resolve(token);
            }
        }
    }

    pub(super) fn timeouts(&mut self) {
        let now = self.now;
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            if let Some(p) = self.pending.get_mut(&token) {
                p.error.get_or_insert(Delivered::TimedOut(ACK_TIMEOUT_MS));
            }
            self.resolve(token);
        }
    }

    pub(super) fn resolve(&mut self, token: u64) {
        let Some(p) = self.pending.remove(&token) else { return };
        let ok = p.error.is_none();
        let owner = p.owner;
        let owner_live = self.slot_of(owner).is_some();
        if owner_live && let Err(e) = self.store_ops(owner, p.store) {
            self.violation.get_or_insert(e);
        }
        match p.purpose {
            // A client whose node crashed got no answer: as good as not acknowledged.
            Purpose::Register { client, write, value } => {
                self.register_write_done(client, write, value, ok && owner_live)
            }
            Purpose::Second { user, write } => self.second_write_done(user, write, ok && owner_live),
            Purpose::SecondEnd { user, id, holders } => self.second_end_done(user, id, holders, ok && owner_live),
            _ if !owner_live => {} // the waiting node crashed
            Purpose::Write(w) => {
                if ok {
                    self.trace(|| format!("ACKED {} ({}) {}={:?}", w.id, w.id.log_id(), w.name, w.stamp));
                    self.oracle.acked_total += 1;
                    self.oracle.acked.push(w);
                }
            }
            Purpose::Node { topic, token } => {
                let result = p.error.unwrap_or(Delivered::Acked);
                let now = clocks(self.now);
                match topic {
                    Topic::Main => {
                        if let Some(node) = self.node(owner) {
                            node.session.handle_send_result(now, token, result);
                        }
                        self.run_outputs_later(owner);
                    }
                    Topic::Second => {
                        if let Some(second) = self.node(owner).and_then(|n| n.second.as_mut()) {
                            second.session.handle_send_result(now, token, result);
                        }
                        self.run_second_outputs_later(owner);
                    }
                }
            }
            Purpose::Done => {}
        }
    }
}
