"""Writes datasets/topic/data.csv: short news-like sentences in four topics, written for calibkit.

Each topic has a few groups of hand-written subjects and predicates that fit together
("The central bank" + "raised interest rates by a quarter point"); a sentence joins a
subject, a predicate and a time phrase. A seeded sample picks 100 sentences per topic.
Rerunning gives the same file. The class names are AG News's (World, Sports, Business,
Sci/Tech), so a template and verbalizer written for one fit the other.

    python datasets/topic/make.py
"""

import random
from pathlib import Path

from calibkit.datasets.cards import write_data_csv

PER_CLASS = 100
WHEN = ["", " on Monday", " on Tuesday", " on Thursday", " this week", " late on Friday", " after weeks of talks"]

TOPICS: dict[str, list[tuple[list[str], list[str]]]] = {
    "World": [
        (
            ["The foreign minister", "The prime minister", "The new president", "The opposition leader",
             "The United Nations envoy", "The ruling party", "Leaders of the two neighbouring countries",
             "The government in Nairobi", "The European Union", "Election observers"],
            ["called for a ceasefire in the border region", "announced early elections for next spring",
             "met in Geneva to discuss the refugee crisis", "signed a peace agreement with rebel groups",
             "condemned the attack on the embassy", "promised to free political prisoners",
             "rejected calls to resign over the scandal", "agreed to reopen the border crossing",
             "warned of famine in the drought-hit provinces", "expelled two foreign diplomats"],
        ),
        (
            ["Thousands of protesters", "Opposition supporters", "Crowds in the capital", "Striking students"],
            ["marched on parliament to demand new elections", "clashed with riot police outside the palace",
             "gathered in the main square despite a ban", "called for the military government to step down"],
        ),
    ],
    "Sports": [
        (
            ["The defending champions", "The home side", "The national rugby team", "Manchester United",
             "The Boston Red Sox", "The Olympic relay team", "The visiting team", "The league leaders"],
            ["won the cup final on penalties", "came from behind to win in extra time",
             "were knocked out in the quarter-finals", "signed a new striker before the transfer deadline",
             "sacked their coach after a fifth straight defeat", "clinched the title with two games to spare",
             "lost the season opener by a single point", "beat their rivals three goals to one",
             "set a new world record in the final", "reached the semi-finals for the first time"],
        ),
        (
            ["The tennis star", "The veteran goalkeeper", "The young sprinter", "The golf champion",
             "The team captain"],
            ["withdrew from the tournament with a knee injury", "won a third straight Grand Slam title",
             "announced his retirement after twenty seasons", "was suspended for two matches",
             "scored twice in the second half", "finished one shot behind the leader"],
        ),
    ],
    "Business": [
        (
            ["The airline", "The retail chain", "The carmaker", "A major bank", "The supermarket group",
             "The mining company", "The insurer", "The brewing giant", "The oil company"],
            ["reported a sharp rise in quarterly profits", "cut 2,000 jobs to reduce costs",
             "agreed to buy a smaller rival for $3 billion", "saw its shares fall 8 percent after weak sales",
             "raised its dividend for the third year running", "warned that higher fuel costs would hurt earnings",
             "filed for bankruptcy protection", "named a new chief executive",
             "beat analysts' forecasts for the quarter", "plans to sell shares to the public next year"],
        ),
        (
            ["The central bank", "The Federal Reserve", "The finance ministry"],
            ["raised interest rates by a quarter point", "left interest rates unchanged",
             "said inflation had slowed for the third month", "cut its forecast for economic growth",
             "warned that the housing market was overheating"],
        ),
        (
            ["Oil prices", "Stocks on Wall Street", "The dollar", "Gold prices"],
            ["fell sharply in early trading", "rose to a six-month high", "ended the week little changed",
             "slipped after the jobs report"],
        ),
    ],
    "Sci/Tech": [
        (
            ["The software company", "The chip maker", "The search engine company", "A Silicon Valley start-up",
             "The maker of the popular smartphone", "The computer maker", "The video game company"],
            ["released a new version of its operating system", "unveiled a faster processor for laptops",
             "fixed a security flaw that exposed user passwords", "launched a music download service",
             "began testing a new wireless network", "opened its programming tools to outside developers",
             "showed a prototype of a foldable screen", "started selling a cheaper home computer"],
        ),
        (
            ["A team of astronomers", "NASA scientists", "Engineers at the space agency", "Astronomers in Chile",
             "The European Space Agency"],
            ["discovered a planet orbiting a nearby star", "launched a probe to study the moons of Saturn",
             "found evidence of water on Mars", "measured the speed of a distant galaxy",
             "photographed a comet as it passed the Sun", "spotted an asteroid that will pass close to Earth"],
        ),
        (
            ["Researchers at the university", "Biologists in Japan", "Physicists in Switzerland", "Chemists in Germany",
             "Scientists at a medical institute"],
            ["sequenced the genome of a common crop", "built a robot that learns to walk on its own",
             "identified a gene linked to ageing", "tested a new solar panel that converts more sunlight",
             "developed a battery that charges in minutes", "created a material stronger than steel"],
        ),
    ],
}


def main() -> None:
    rng = random.Random(20261127)
    rows = []
    for label, groups in TOPICS.items():
        pairs = [(s, p) for subjects, preds in groups for s in subjects for p in preds]
        for s, p in rng.sample(pairs, PER_CLASS):
            rows.append({"text": f"{s} {p}{rng.choice(WHEN)}.", "label": label})
    rng.shuffle(rows)
    out = write_data_csv(Path(__file__).resolve().parent, rows, ["text", "label"])
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
