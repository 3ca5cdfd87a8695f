"""Apps, their pages and the switching sequence, all from the seed.

Page contents come from the corpus the zram study captures on this machine
(:func:`blockemu.experiments.zram.capture_corpus`): resident anonymous pages
of real processes that build app-like heaps (records, text, numeric arrays,
compressed blobs) and pages of installed shared libraries.  How that differs
from Android app memory: ART's heap (compacting GC, dex caches, bitmaps in
native memory) is not a CPython heap, and an app's file pages are APK/odex
code and resources rather than ELF libraries; ratios measured here are those
of this corpus, printed with the results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blockemu.experiments.launch.memory import App
from blockemu.experiments.launch.params import PAGE_KIB, LaunchParams


@dataclass(frozen=True)
class AppSizes:
    anon_pages: list[int]
    file_pages: list[int]

    @property
    def total_pages(self) -> int:
        return sum(self.anon_pages) + sum(self.file_pages)


def app_sizes(params: LaunchParams) -> AppSizes:
    rng = np.random.default_rng(params.seed)
    per_mib = 1024 // PAGE_KIB / params.scale

    def draw(mean_mib: float) -> list[int]:
        low, high = mean_mib * (1 - params.size_spread), mean_mib * (1 + params.size_spread)
        return [max(1, round(float(rng.uniform(low, high)) * per_mib)) for _ in range(params.apps)]

    return AppSizes(draw(params.app_anon_mib), draw(params.app_file_mib))


def make_apps(params: LaunchParams, sizes: AppSizes, anon: list[list[bytes]], files: list[list[bytes]]) -> list[App]:
    """Apps with their pages (copied, so each run starts from the same contents) and hot sets."""
    rng = np.random.default_rng(params.seed + 1)
    apps: list[App] = []
    swap_base = file_base = 0
    for index in range(params.apps):
        n_anon, n_file = sizes.anon_pages[index], sizes.file_pages[index]
        hot_anon = sorted(int(i) for i in rng.choice(n_anon, max(1, round(n_anon * params.hot_anon_fraction)),
                                                      replace=False))
        hot_file = sorted(int(i) for i in rng.choice(n_file, max(1, round(n_file * params.hot_file_fraction)),
                                                      replace=False))
        apps.append(App(index, list(anon[index][:n_anon]), list(files[index][:n_file]), hot_anon, hot_file,
                        swap_base, file_base))
        swap_base += n_anon
        file_base += n_file
    return apps


def switching_sequence(params: LaunchParams) -> list[int]:
    """Every app once (the warm-up, in a seeded order), then ``launches`` Zipf-weighted picks.

    The same app is never launched twice in a row (that is not a launch).
    """
    rng = np.random.default_rng(params.seed + 2)
    order = [int(a) for a in rng.permutation(params.apps)]
    weights = 1.0 / np.arange(1, params.apps + 1) ** params.zipf_s
    weights /= weights.sum()
    sequence = list(order)
    while len(sequence) < params.apps + params.launches:
        pick = int(rng.choice(params.apps, p=weights))
        if params.apps == 1 or pick != sequence[-1]:
            sequence.append(pick)
    return sequence


def corpus_shape(sizes: AppSizes) -> tuple[int, float]:
    """(pages_per_app, library_share) for the zram study's capture so that every app's pages fit."""
    most_anon, most_file = max(sizes.anon_pages), max(sizes.file_pages)
    per_app = most_anon + most_file
    # capture_corpus gives each app per_app - int(per_app * share) anonymous pages.
    share = most_file / per_app
    while per_app - int(per_app * share) < most_anon:
        share -= 1 / per_app
    return per_app, share


def split_corpus(corpus: list[list[bytes]], anon_per_app: int) -> tuple[list[list[bytes]], list[list[bytes]]]:
    """Per app: its anonymous pages (the process pages) and its file pages (library pages).

    ``corpus`` is per app: ``anon_per_app`` anonymous pages, then library
    pages (the zram study's layout).
    """
    return [pages[:anon_per_app] for pages in corpus], [pages[anon_per_app:] for pages in corpus]
