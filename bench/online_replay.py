"""The replay of `bench/online.py`: test, then train, tick by tick, asking every
variant's server before each event is sent (the protocol is in bench/online.py)."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bench.online_models import DailyRetrain
from bench.online_report import Asked
from models.metrics import ranks_in_lists
from streamrec.client import RecommenderClient
from streamrec.db import connect
from streamrec.history import HistoryStore
from streams.producer import InteractionProducer, now_ms
from streams.replay import replayed_event

log = logging.getLogger("bench.online")

DATASET = "ml-100k"
VARIANTS = ("static", "online", "daily_retrain", "online_knowledge")
K = 10
MAX_HISTORY = 1000  # every earlier item of an ml-100k user (737 at most)


class Replay:
    """Test, then train, tick by tick; records each variant's rank of each event's item."""

    def __init__(self, settings, system, dataset, split: int, args, watchers):
        self.settings, self.system, self.args = settings, system, args
        self.records = dataset.interaction_records()
        self.split = split
        self.t0 = self.records[split].timestamp
        end = len(self.records)
        if args.days:
            end = int(np.searchsorted(dataset.timestamps, self.t0 + args.days * 86400, side="left"))
        self.events = self.records[split:end]
        seen_before = {r.item_id for r in self.records[:split]}
        self.cold = np.array([r.item_id not in seen_before for r in self.events])
        self.probes, self.topic = watchers
        self.clients = {
            v: RecommenderClient(f"127.0.0.1:{system.ports[v]}", timeout_s=60) for v in VARIANTS
        }
        self.pool = ThreadPoolExecutor(args.concurrency)
        self.ranks = {v: np.full(len(self.events), math.inf) for v in VARIANTS}
        self.popular = {v: np.zeros(len(self.events), dtype=bool) for v in VARIANTS}
        self.sent_ms = np.zeros(len(self.events), dtype=np.int64)
        self.barrier_waits: list[float] = []
        self.barrier_timeouts = 0
        self.behind_s: list[float] = []
        # Per user: the events sent so far (all stored by the next tick's barrier).
        self.expected = Counter(r.user_id for r in self.records[:split])
        self.short_histories = 0  # users whose stored history lacked a sent event
        self.within_tick = 0  # asks whose history ends with events of their own tick

    def _ask(self, variant: str, user: int, history: list[int]):
        return self.clients[variant].recommend(user_id=user, k=K, history=history)

    def _histories(self, store: HistoryStore, first: int, end: int) -> list[list[int]]:
        """Each event's history: the user's items in ClickHouse (all of them, read once for
        the tick through `HistoryStore`), then the user's earlier events of this tick (they
        are sent once asked). The server ranks from the last of them and excludes all."""
        users = [self.events[i].user_id for i in range(first, end)]
        stored = store.batch_recent(set(users), MAX_HISTORY)
        so_far = {user: [entry.item_id for entry in stored.get(user, [])] for user in users}
        self.short_histories += sum(len(so_far[u]) < self.expected[u] for u in set(users))
        histories = []
        for i, user in zip(range(first, end), users, strict=True):
            self.within_tick += len(so_far[user]) > len(stored.get(user, ()))
            histories.append(list(so_far[user]))
            so_far[user].append(self.events[i].item_id)
            self.expected[user] += 1
        return histories

    def _stored(self, client) -> int:
        return client.execute("SELECT count() FROM interactions")[0][0]

    def _barrier(self, client, sent: int) -> None:
        """Until every event sent so far is in ClickHouse (or the timeout passes)."""
        started = time.perf_counter()
        while self._stored(client) < sent:
            if time.perf_counter() - started > self.args.history_timeout_s:
                self.barrier_timeouts += 1
                break
            time.sleep(0.02)
        self.barrier_waits.append(time.perf_counter() - started)

    def run(self, retrain: DailyRetrain) -> dict:
        args, events = self.args, self.events
        wall_per_sim_s = args.day_seconds / 86400
        tick_s = args.tick_minutes * 60
        client, store = connect(self.settings), HistoryStore(self.settings)
        started = time.perf_counter()
        index, day = 0, 0
        with InteractionProducer.from_settings(self.settings, linger_ms=0) as producer:
            while index < len(events):
                tick_start = self.t0 + ((events[index].timestamp - self.t0) // tick_s) * tick_s
                due = started + (tick_start - self.t0) * wall_per_sim_s
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                else:
                    self.behind_s.append(-delay)
                event_day = int((tick_start - self.t0) // 86400)
                if event_day > day:
                    day = event_day
                    retrain.boundary(day, index)
                end = index
                while end < len(events) and events[end].timestamp < tick_start + tick_s:
                    end += 1
                self._barrier(client, self.split + index)
                users = [events[i].user_id for i in range(index, end)]
                histories = self._histories(store, index, end)
                answers = {
                    v: list(self.pool.map(lambda u, h, v=v: self._ask(v, u, h), users, histories))
                    for v in VARIANTS
                }
                targets = [events[i].item_id for i in range(index, end)]
                for variant, replies in answers.items():
                    lists = [reply.item_ids for reply in replies]
                    self.ranks[variant][index:end] = ranks_in_lists(lists, targets).numpy()
                    self.popular[variant][index:end] = [reply.cold_start for reply in replies]
                for i in range(index, end):
                    producer.send_event(
                        replayed_event(DATASET, self.split + i, events[i], now_ms())
                    )
                producer.flush()
                sent_at, sent_ms = time.perf_counter(), now_ms()
                self.sent_ms[index:end] = sent_ms
                for i in range(index, end):
                    if i % args.sample_every == 0:
                        self.probes.add(events[i].user_id, events[i].item_id, sent_at)
                index = end
                if index // 2000 != (index - len(users)) // 2000:
                    log.info(
                        "replayed %d/%d events (simulated day %d) in %.0f s",
                        index,
                        len(events),
                        day,
                        time.perf_counter() - started,
                    )
        client.disconnect()
        store.close()
        seconds = time.perf_counter() - started
        simulated_days = (events[-1].timestamp - self.t0) / 86400
        return {
            "events": len(events),
            "simulated_days": round(simulated_days, 2),
            "seconds": round(seconds, 1),
            "achieved_day_seconds": round(seconds / max(simulated_days, 1e-9), 2),
            "ticks_behind_schedule": len(self.behind_s),
            "behind_schedule_max_s": round(max(self.behind_s), 2) if self.behind_s else 0.0,
            "history_barrier_p50_s": round(float(np.percentile(self.barrier_waits, 50)), 3),
            "history_barrier_p99_s": round(float(np.percentile(self.barrier_waits, 99)), 3),
            "history_barrier_timeouts": self.barrier_timeouts,
            "ticks": len(self.barrier_waits),
            "histories_short_of_a_sent_event": self.short_histories,
            "asks_with_events_of_their_own_tick": self.within_tick,
        }

    def asked(self) -> Asked:
        weeks = np.array([(r.timestamp - self.t0) // (7 * 86400) for r in self.events])
        return Asked(
            users=np.array([r.user_id for r in self.events]),
            weeks=weeks,
            cold=self.cold,
            ranks=self.ranks,
            cold_start=self.popular,
        )

    def close(self) -> None:
        self.pool.shutdown()
        for client in self.clients.values():
            client.close()
