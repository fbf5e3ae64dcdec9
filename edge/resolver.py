"""From stored keywords to the detector's: per-keyword thresholds from the false-alarm budget, and look-alikes.

A keyword file holds what the user enrolled (the template, their takes, negatives they marked, an explicit
threshold if they gave one). What the detector needs also depends on the model's cohort and the configuration:
- a threshold: the user's own if they set one, else the one that keeps the keyword within
  `detector.false_alarms_per_hour` on the cohort, else `detector.threshold` (no budget or no cohort);
- negatives: the user's, plus the `detector.hard_negatives` cohort moments most like the keyword.
`KeywordResolver` computes these (about 0.1-0.3 s per keyword on a desktop core) and caches them per keyword
content, so a reload after one enrollment only computes the new keyword. Resolved templates live in memory only;
the files are never rewritten with them.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge.budget import KeywordBudget, budget_for_template, hard_negatives, phrase_scores, prune_lookalikes
from edge.cohort import Cohort, CohortError, cohort_path_for
from edge.config import Config, DetectorConfig
from edge.takematch import look_distance
from edge.templates import Template

__all__ = ["KeywordResolver", "Resolved"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resolved:
    """A keyword as the detector will use it, and the budget behind its threshold (None: not from a budget)."""

    template: Template
    budget: KeywordBudget | None
    threshold_source: str  # "keyword" (set at enrollment), "budget", or "default" (detector.threshold)
    second_look: bool = False  # vetoed windows that follow one of the takes are kept (edge.takematch)
    second_look_within: float | None = None  # how closely they must follow (the accepted distance)

    def as_event(self) -> dict[str, object]:
        event: dict[str, object] = {
            "keyword": self.template.name,
            "threshold": round(float(self.template.threshold or 0.0), 4),
            "threshold_source": self.threshold_source,
            "negatives": int(self.template.negatives.shape[0]),
            "second_look": self.second_look,
        }
        if self.budget is not None:
            event["expected_false_alarms_per_hour"] = round(self.budget.expected_per_hour, 3)
        return event


def _content_key(template: Template) -> str:
    """Everything the resolution depends on: two keywords enrolled from the same takes are still two keywords."""
    digest = hashlib.sha1(template.name.encode(), usedforsecurity=False)
    for array in (template.embedding, template.negatives, template.take_embeddings, template.parts):
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    digest.update(repr((template.threshold, template.part_offsets_ms, template.take_spread)).encode())
    return digest.hexdigest()


class KeywordResolver:
    """Resolves templates under one detector configuration and one (optional) cohort; caches the results."""

    def __init__(self, settings: DetectorConfig, cohort: Cohort | None) -> None:
        self.settings = settings
        # Only the two halves are kept (the whole would be a third copy: 11 MB for 2.3 hours).
        self._halves = cohort.halves() if cohort is not None else None
        self.cohort_hours = cohort.hours if cohort is not None else 0.0
        self._cache: dict[str, Resolved] = {}
        self._refractory = max(0, settings.refractory_ms // settings.hop_ms)

    def fork(self) -> KeywordResolver:
        """Another resolver over the same cohort (shared, read-only) with a cache of its own: one per thread."""
        twin = KeywordResolver(self.settings, None)
        twin._halves, twin.cohort_hours = self._halves, self.cohort_hours
        return twin

    @classmethod
    def for_model(cls, config: Config, model_path: str | Path, model_sha256: str) -> KeywordResolver:
        """The configured cohort (default: beside the model), or none with the reason logged once."""
        settings = config.detector
        if settings.false_alarms_per_hour <= 0 and settings.hard_negatives == 0:
            return cls(settings, None)
        path = Path(config.model.cohort) if config.model.cohort else cohort_path_for(model_path)
        try:
            cohort = Cohort.load(path, model_sha256)
            if cohort.hop_ms != settings.hop_ms:
                raise CohortError(
                    f"{path}: made with a {cohort.hop_ms} ms hop, the detector runs every {settings.hop_ms} ms"
                )
        except CohortError as error:
            log.warning("%s; every keyword uses detector.threshold %.3f", error, settings.threshold)
            return cls(settings, None)
        log.info("cohort %s: %.2f h of audio for false-alarm budgets", path, cohort.hours)
        return cls(settings, cohort)

    def resolve(self, templates: list[Template]) -> list[Resolved]:
        """Every keyword as the detector will use it; results of keywords no longer given are forgotten."""
        resolved = [self.resolve_one(template) for template in templates]
        live = {_content_key(t) for t in templates}
        self._cache = {k: v for k, v in self._cache.items() if k in live}
        return resolved

    def resolve_one(self, template: Template) -> Resolved:
        key = _content_key(template)
        if key not in self._cache:
            self._cache[key] = self._resolve(template)
        return self._cache[key]

    def _resolve(self, template: Template) -> Resolved:
        resolved = self._resolve_threshold(template)
        settings = self.settings
        within = look_distance(
            template.take_speech, template.take_spread, settings.take_match_spread, settings.take_match_floor
        )
        return replace(resolved, second_look=within is not None, second_look_within=within)

    def _resolve_threshold(self, template: Template) -> Resolved:
        settings = self.settings
        negatives = template.negatives
        # Look-alikes veto single windows; a phrase is already matched window by window, whole.
        if self._halves is not None and settings.hard_negatives > 0 and not template.is_phrase:
            found = hard_negatives(
                template.embedding,
                self._halves[0],
                settings.hard_negatives,
                settings.trigger_level,
                settings.trigger_window,
                self._refractory,
            )
            found = prune_lookalikes(found, template.take_embeddings, settings.lookalike_prune_floor)
            negatives = np.concatenate([negatives, found]) if found.shape[0] else negatives
        if template.threshold is not None:
            return Resolved(replace(template, negatives=negatives), None, "keyword")
        if self._halves is None or settings.false_alarms_per_hour <= 0:
            threshold = settings.threshold
            return Resolved(replace(template, threshold=threshold, negatives=negatives), None, "default")
        calibration = self._halves[1]
        phrase = None
        if template.is_phrase:
            back = [round(offset / settings.hop_ms) for offset in template.part_offsets_ms]
            phrase = phrase_scores(calibration, template.parts, back)
        budget = budget_for_template(
            template.embedding,
            calibration,
            settings.false_alarms_per_hour,
            settings.trigger_level,
            settings.trigger_window,
            self._refractory,
            take_units=template.take_embeddings,
            negatives=negatives,
            scores=phrase,
            veto_margin=settings.veto_margin,
        )
        return Resolved(replace(template, threshold=budget.threshold, negatives=negatives), budget, "budget")
