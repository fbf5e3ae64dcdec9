"""docs/home_assistant_flow.png: how udkws and Home Assistant talk (Wyoming and MQTT), for docs/home-assistant.md.

Run from the repo root: `.venv/bin/python docs/plots/home_assistant_flow.py`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path("docs/home_assistant_flow.png")
BOARD, HOME, BROKER, STORE = "#dbe9f6", "#e3f1df", "#fbe7c6", "#eeeeee"


def box(ax: plt.Axes, x: float, y: float, w: float, h: float, title: str, body: str, color: str) -> None:
    ax.add_patch(
        FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=color, ec="#555555")
    )
    ax.text(x + w / 2, y + h - 0.12, title, ha="center", va="top", fontsize=10.5, weight="bold")
    ax.text(x + w / 2, y + h - 0.42, body, ha="center", va="top", fontsize=8.5, linespacing=1.35)


def arrow(ax: plt.Axes, start: tuple[float, float], end: tuple[float, float], label: str = "",
          at: tuple[float, float] | None = None, bend: float = 0.0, both: bool = False) -> None:  # fmt: skip
    ax.add_patch(
        FancyArrowPatch(
            start, end, arrowstyle="<|-|>" if both else "-|>", mutation_scale=13, lw=1.4, color="#333333",
            connectionstyle=f"arc3,rad={bend}",
        )
    )  # fmt: skip
    if label:
        x, y = at if at is not None else ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        ax.text(x, y, label, ha="center", va="center", fontsize=8, color="#222222",
                bbox={"fc": "white", "ec": "none", "alpha": 0.9, "pad": 1.5})  # fmt: skip


def main() -> None:
    fig, ax = plt.subplots(figsize=(12.5, 6.4))
    ax.set_xlim(0, 12.5)
    ax.set_ylim(0, 6.4)
    ax.axis("off")
    ax.text(0.2, 6.25, "On the board (Raspberry Pi)", fontsize=11, weight="bold", color="#1f4e79", va="top")
    ax.text(8.6, 6.25, "Home Assistant", fontsize=11, weight="bold", color="#2e6b2e", va="top")

    box(ax, 0.2, 4.6, 3.1, 1.3, "Enrollment",
        "button: press, say the word 3 times\nkws-edge enroll NAME a.wav b.wav c.wav\nkws-edge remove NAME", BOARD)  # fmt: skip
    box(ax, 0.2, 2.55, 3.1, 1.3, "Keywords",
        "/var/lib/udkws/keywords/NAME.json\nre-read when they change\n(no restart)", STORE)  # fmt: skip
    box(ax, 4.0, 3.9, 3.6, 2.0, "kws-edge run",
        "microphone loop: detector, LEDs, hooks\nMQTT publisher (own thread, queue)\n"
        "Wyoming service (own thread and\ninterpreter; tcp :10400)", BOARD)  # fmt: skip
    box(ax, 4.0, 0.3, 3.6, 1.45, "MQTT broker (Mosquitto)",
        "udkws/NODE/status: online | offline (will)\nudkws/NODE/keyword/NAME, .../detection\n"
        "homeassistant/event/NODE/NAME/config", BROKER)  # fmt: skip
    box(ax, 8.6, 3.9, 3.7, 2.0, "Wyoming integration",
        "wake word entity: the enrolled keywords\n(Describe -> Info, refreshed)\n"
        "voice pipeline or satellite streams:\nDetect, AudioStart, AudioChunk...", HOME)  # fmt: skip
    box(ax, 8.6, 0.3, 3.7, 1.45, "MQTT integration",
        "device 'udkws NODE' (discovery):\nevent.NAME per keyword fires 'detected';\nsensor: number of keywords", HOME)  # fmt: skip
    box(ax, 8.6, 2.2, 3.7, 1.25, "Then",
        "pipeline: speech to text, intent, reply\nautomations triggered by event.NAME", HOME)  # fmt: skip

    arrow(ax, (1.75, 4.6), (1.75, 3.85), "saves, removes", at=(0.95, 4.22))
    arrow(ax, (3.3, 3.5), (4.0, 4.3), "reload: added,\nremoved", at=(3.65, 3.3), bend=-0.25)
    arrow(ax, (7.6, 5.45), (8.6, 5.45), "Describe / Info:\nwake words", at=(8.1, 5.85), both=True)
    arrow(ax, (8.6, 4.45), (7.6, 4.45), "Detection(NAME)\n| NotDetected", at=(8.1, 4.05))
    arrow(ax, (5.8, 3.9), (5.8, 1.75), "detections, keywords\nadded / removed,\navailability (QoS 1)")
    arrow(ax, (7.6, 1.0), (8.6, 1.0), "retained\ndiscovery, events", at=(8.1, 1.45))
    arrow(ax, (10.45, 3.9), (10.45, 3.45))
    arrow(ax, (10.45, 1.75), (10.45, 2.2))
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
