"""Readable element paths for findings: local names, with a 1-based index where a name repeats."""

from __future__ import annotations

from collections import Counter

from lxml import etree


class ElementPaths:
    """Paths of elements of one document. The steps of a parent's children are worked out
    once, on the first path through it: listing the siblings for every finding cost time in
    the square of their number when thousands of repeated elements each had a finding."""

    def __init__(self) -> None:
        # the children are keys: keeping their proxies alive keeps their identity (lxml)
        self._steps: dict[etree._Element, dict[etree._Element, str]] = {}

    def __call__(self, element: etree._Element) -> str:
        steps: list[str] = []
        node: etree._Element | None = element
        while node is not None:
            parent = node.getparent()
            if parent is None:
                steps.append(etree.QName(node).localname)
            else:
                steps.append(self._children(parent)[node])
            node = parent
        return "/" + "/".join(reversed(steps))

    def _children(self, parent: etree._Element) -> dict[etree._Element, str]:
        known = self._steps.get(parent)
        if known is None:
            children = list(parent.iterchildren(tag=etree.Element))
            repeats = Counter(child.tag for child in children)
            seen: Counter[str] = Counter()
            known = {}
            for child in children:
                step = etree.QName(child).localname
                if repeats[child.tag] > 1:
                    seen[child.tag] += 1
                    step = f"{step}[{seen[child.tag]}]"
                known[child] = step
            self._steps[parent] = known
        return known


def element_path(element: etree._Element) -> str:
    """One element's path (for many of one document, share an :class:`ElementPaths`)."""
    return ElementPaths()(element)
