"""The file sink: each table is a folder of JSON Lines part files.

Files cannot be updated in place, so every table is append-only here: a batch becomes new
part files, and readers de-duplicate by the table's key (ids are deterministic, so a
replay only repeats rows). `list_memberships` is not written: readers fold the deltas,
taking each lead's latest delta per list by its per-lead `seq`.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import uuid

from schemas import tables
from storage.rows import delta_values

T = tables


class JsonlStore:
    def __init__(self, folder):
        self.folder = folder
        self._profiles = None
        self._folded = None  # (delta counts by action, membership rows), read once
        for table in T.TABLES:
            if table != T.LIST_MEMBERSHIPS:
                os.makedirs(os.path.join(folder, table), exist_ok=True)

    def write(self, batch):
        for table, rows in batch.items():
            if not rows or table == T.LIST_MEMBERSHIPS:
                continue
            name = os.path.join(self.folder, table, f"part-{uuid.uuid4().hex}.jsonl")
            with open(name + ".tmp", "w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
                    handle.write("\n")
            os.replace(name + ".tmp", name)  # readers never see half a file
        if batch.get(T.MEMBERSHIP_DELTAS):
            self._folded = None
        if self._profiles is not None:  # what this store wrote, it reads back
            for row in batch.get(T.LEAD_PROFILES, ()):
                self._profiles[(row["tenant_id"], row["lead_id"])] = row
        return len(batch.get(T.MEMBERSHIP_DELTAS, ()))

    def write_deltas(self, deltas, processed_at, profiles=()):
        """Write Delta records, then the profile rows of their leads (a crash between the
        two leaves deltas without their profile, never a profile without its deltas);
        `processed_at` is the RFC 3339 text of the batch."""
        columns = T.column_names(T.MEMBERSHIP_DELTAS)
        rows = [dict(zip(columns, delta_values(d, processed_at))) for d in deltas]
        return self.write({T.MEMBERSHIP_DELTAS: rows, T.LEAD_PROFILES: list(profiles)})

    def _raw(self, table):
        for name in sorted(glob.glob(os.path.join(self.folder, table, "part-*.jsonl"))):
            with open(name, encoding="utf-8") as handle:
                for line in handle:
                    yield json.loads(line)

    def rows(self, table):
        if table == T.LIST_MEMBERSHIPS:
            return list(self._membership_rows())
        keyed = {}
        for row in self._raw(table):
            key = tuple(row[k] for k in T.KEYS[table])
            if table == T.LEAD_PROFILES:
                old = keyed.get(key)
                if old is not None and _order(old) > _order(row):
                    continue
            keyed[key] = row
        return list(keyed.values())

    def _fold(self):
        """(delta counts by action, membership rows) from one read of the deltas, kept
        until this store writes deltas again: a summary asks for the counts, the number
        of memberships and the list sizes, and each read of a large sink's part files
        took a minute."""
        if self._folded is None:
            latest, counts = {}, collections.Counter()
            for row in self.rows(T.MEMBERSHIP_DELTAS):
                counts[row["action"]] += 1
                key = (row["tenant_id"], row["list_id"], row["lead_id"])
                if key not in latest or latest[key]["seq"] < row["seq"]:
                    latest[key] = row
            self._folded = dict(counts), [
                {"tenant_id": t, "list_id": lst, "lead_id": lead, "since": row["event_time"],
                 "seq": row["seq"]}
                for (t, lst, lead), row in latest.items() if row["action"] == "added"]
        return self._folded

    def _membership_rows(self):
        return self._fold()[1]

    def count(self, table):
        return len(self.rows(table))

    def memberships(self):
        return {(r["tenant_id"], r["list_id"], r["lead_id"]) for r in self._membership_rows()}

    def profile(self, tenant_id, lead_id):
        # one read of all snapshots, then lookups: a job resuming leads asks many times.
        # Rows this store writes later are seen; rows other processes write are not, so
        # a streaming job that resumes from a JSON Lines sink must be its only writer.
        if self._profiles is None:
            self._profiles = {(r["tenant_id"], r["lead_id"]): r
                              for r in self.rows(T.LEAD_PROFILES)}
        return self._profiles.get((tenant_id, lead_id))

    def profiles(self):
        return self.rows(T.LEAD_PROFILES)

    def lead_keys(self):
        return [key for page in self.lead_key_pages() for key in page]

    def lead_key_pages(self, page_size=500):
        """Lists of at most `page_size` (tenant_id, lead_id) of the stored profiles, in key
        order.

        Profile files are appended in no order and a lead has rows in many of them, so
        no page is known before every file is read: one streaming pass keeps the distinct
        keys (two short strings a lead), never the rows, then the sorted keys are handed
        out page by page. Memory grows with the number of leads, not with the page; a
        sink with too many leads for that belongs in SQLite or BigQuery.
        """
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {page_size}")
        keys = sorted({(row["tenant_id"], row["lead_id"])
                       for row in self._raw(T.LEAD_PROFILES)})
        for start in range(0, len(keys), page_size):
            yield keys[start:start + page_size]

    def list_sizes(self):
        sizes = collections.Counter((r["tenant_id"], r["list_id"])
                                    for r in self._membership_rows())
        return sorted(((t, lst, n) for (t, lst), n in sizes.items()),
                      key=lambda x: (-x[2], x[0], x[1]))

    def delta_counts(self):
        return dict(self._fold()[0])

    def close(self):
        pass


def _order(profile_row):
    """Which of two snapshots of a lead is newer: more deltas, then written later."""
    return json.loads(profile_row["state"]).get("seq", 0), profile_row["updated_at"]
