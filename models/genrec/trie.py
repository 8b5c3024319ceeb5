"""A prefix trie over the catalog's item token sequences, for constrained beam search.

Every path from the root to a leaf is one item's sub-tokens followed by the
end token, so a beam that follows the trie can only ever spell a catalog item
(the public GenRec code generates freely and drops invalid IDs afterwards).
Each node counts the items below it, which lets one request ban items (its
history) without copying the trie: a child stays open while it has an item
below it that is not banned.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator


class _Node:
    __slots__ = ("children", "count", "item")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.count = 0  # items at or below this node
        self.item: int | None = None  # set on the leaf (after the end token)


class ItemTrie:
    """Item token sequences (each ending with `end_token`) -> item index."""

    def __init__(self, sequences: dict[int, list[int]], end_token: int):
        self.end_token = end_token
        self.root = _Node()
        self._paths: dict[int, tuple[int, ...]] = {}
        for item, tokens in sequences.items():
            self.add(item, tokens)

    def add(self, item: int, tokens: Iterable[int]) -> None:
        """Insert one item; its sequence must not be the prefix of another's nor repeat one."""
        path = (*tokens, self.end_token)
        if item in self._paths:
            raise ValueError(f"item {item} is already in the trie")
        nodes = [self.root]
        for token in path:
            nodes.append(nodes[-1].children.setdefault(token, _Node()))
        if nodes[-1].item is not None or nodes[-1].children:
            raise ValueError(f"item {item}'s tokens {path} collide with another item")
        nodes[-1].item = item
        for node in nodes:
            node.count += 1
        self._paths[item] = path

    def __len__(self) -> int:
        return self.root.count

    def _node(self, prefix: Iterable[int]) -> _Node | None:
        node = self.root
        for token in prefix:
            node = node.children.get(token)
            if node is None:
                return None
        return node

    def banned_counts(self, banned_items: Iterable[int]) -> Counter:
        """Per prefix (a tuple), how many of these items lie below it; pass to `allowed`."""
        counts: Counter = Counter()
        for item in set(banned_items):
            path = self._paths.get(item)
            if path is not None:
                for end in range(len(path) + 1):
                    counts[path[:end]] += 1
        return counts

    def allowed(self, prefix: tuple[int, ...], banned: Counter | None = None) -> list[int]:
        """The tokens that may follow `prefix` (empty when the prefix leads nowhere)."""
        node = self._node(prefix)
        if node is None:
            return []
        if not banned:
            return list(node.children)
        return [
            token
            for token, child in node.children.items()
            if child.count > banned.get((*prefix, token), 0)
        ]

    def item_of(self, path: Iterable[int]) -> int | None:
        """The item a complete path (end token included) spells, or None."""
        node = self._node(path)
        return None if node is None else node.item

    def sequences(self) -> Iterator[tuple[tuple[int, ...], int]]:
        """Every (path, item) the trie admits, depth first."""
        stack = [((), self.root)]
        while stack:
            path, node = stack.pop()
            if node.item is not None:
                yield path, node.item
            for token, child in node.children.items():
                stack.append(((*path, token), child))
