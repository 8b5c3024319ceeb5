"""A prefix trie over the entity pool's token sequences.

At inference it does two things (paper figure 2): it lists the tokens that may
follow a partial entity, so every generated entity exists in the catalog, and
it numbers the tokens of what is generated with intra-entity positions: the
position grows while a token continues an entity and restarts at 1 otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_COUNT = "count"  # a node's key for the number of entities below it


class EntityTrie:
    def __init__(self, sequences: Iterable[Sequence[int]]):
        self._root: dict = {}
        self._count = 0
        for sequence in sequences:
            if not sequence:
                continue
            if sequence in self:
                continue
            node = self._root
            node[_COUNT] = node.get(_COUNT, 0) + 1
            for token in sequence:
                node = node.setdefault(int(token), {})
                node[_COUNT] = node.get(_COUNT, 0) + 1
            self._count += 1
            node[None] = True  # end of an entity

    def __len__(self) -> int:
        return self._count

    def _node(self, prefix: Sequence[int]) -> dict | None:
        node = self._root
        for token in prefix:
            node = node.get(int(token))
            if node is None:
                return None
        return node

    def next_tokens(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that keep `prefix` on the way to some entity."""
        node = self._node(prefix)
        return [] if node is None else [token for token in node if isinstance(token, int)]

    def entities_under(self, prefix: Sequence[int]) -> int:
        """How many entities start with `prefix`."""
        node = self._node(prefix)
        return 0 if node is None else node.get(_COUNT, 0)

    def is_entity(self, prefix: Sequence[int]) -> bool:
        node = self._node(prefix)
        return node is not None and None in node

    def __contains__(self, sequence: Sequence[int]) -> bool:
        return self.is_entity(sequence)

    def positions(self, tokens: Sequence[int]) -> list[int]:
        """Intra-entity positions of a generated token stream."""
        positions = []
        node, run = self._root, 0
        for token in tokens:
            token = int(token)
            if run and token in node:
                run += 1
                node = node[token]
            elif token in self._root:
                run, node = 1, self._root[token]
            else:  # plain text: a unit of one token
                run, node = 0, self._root
                positions.append(1)
                continue
            positions.append(run)
        return positions
