"""Writes datasets/truefalse/data.csv: true and false factual statements, written for calibkit.

Five kinds of statement, each built from hand-written facts that are not in doubt:
arithmetic (small sums and products), capitals, continents, animals (class and legs)
and everyday facts (units of time, freezing water, ...). A false statement swaps in a
wrong value: a neighbouring number, another country's capital, another continent, or a
hand-written wrong counterpart. A seeded sample picks 40 true and 40 false statements
of each kind. Rerunning gives the same file.

    python datasets/truefalse/make.py
"""

import random
from pathlib import Path

from calibkit.datasets.cards import write_data_csv

PER_KIND_AND_LABEL = 40

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve"]

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "Canada": "Ottawa", "Australia": "Canberra", "Egypt": "Cairo", "Russia": "Moscow", "China": "Beijing",
    "Portugal": "Lisbon", "Greece": "Athens", "Norway": "Oslo", "Sweden": "Stockholm", "Ireland": "Dublin",
    "Poland": "Warsaw", "Austria": "Vienna", "Kenya": "Nairobi", "Argentina": "Buenos Aires", "Peru": "Lima",
    "Thailand": "Bangkok", "South Korea": "Seoul", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Hungary": "Budapest", "Cuba": "Havana", "Turkey": "Ankara", "the United Kingdom": "London",
}

CONTINENTS = {
    "Europe": ["France", "Germany", "Italy", "Spain", "Poland", "Norway", "Greece", "Portugal", "Sweden", "Austria", "Belgium", "Finland"],
    "Asia": ["Japan", "China", "Thailand", "Vietnam", "Mongolia", "Nepal", "South Korea", "Cambodia", "Laos"],
    "Africa": ["Kenya", "Nigeria", "Ghana", "Ethiopia", "Morocco", "Senegal", "Tanzania", "Uganda", "Zambia", "Mali"],
    "South America": ["Brazil", "Argentina", "Peru", "Chile", "Colombia", "Bolivia", "Uruguay", "Paraguay", "Ecuador", "Venezuela"],
}

ANIMAL_CLASS = {
    "mammal": ["dog", "cat", "horse", "cow", "dolphin", "whale", "elephant", "bat", "rabbit", "lion"],
    "bird": ["eagle", "sparrow", "penguin", "owl", "parrot", "duck", "ostrich", "robin"],
    "fish": ["salmon", "trout", "tuna", "cod", "goldfish", "herring"],
    "reptile": ["snake", "lizard", "crocodile", "tortoise"],
}
LEGS = {
    "A spider": 8, "An ant": 6, "A bee": 6, "A beetle": 6, "A dog": 4, "A cat": 4, "A horse": 4, "A cow": 4,
    "A chicken": 2, "A duck": 2, "An ostrich": 2, "A sheep": 4,
}

# (true statement, false counterpart): everyday facts nobody disputes.
EVERYDAY = [
    ("A week has seven days.", "A week has nine days."),
    ("A day has twenty-four hours.", "A day has thirty hours."),
    ("An hour has sixty minutes.", "An hour has forty minutes."),
    ("A year has twelve months.", "A year has ten months."),
    ("A dozen is twelve.", "A dozen is fifteen."),
    ("A triangle has three sides.", "A triangle has five sides."),
    ("A square has four corners.", "A square has six corners."),
    ("Water freezes at zero degrees Celsius.", "Water freezes at fifty degrees Celsius."),
    ("Water boils at one hundred degrees Celsius at sea level.", "Water boils at ten degrees Celsius at sea level."),
    ("The Sun rises in the east.", "The Sun rises in the west."),
    ("Ice is frozen water.", "Ice is frozen milk."),
    ("Snow is cold.", "Snow is hot."),
    ("The Moon orbits the Earth.", "The Earth orbits the Moon."),
    ("Fish live in water.", "Fish live in trees."),
    ("Bees make honey.", "Cows make honey."),
    ("Grass is usually green.", "Grass is usually purple."),
    ("A bicycle has two wheels.", "A bicycle has seven wheels."),
    ("Humans breathe oxygen.", "Humans breathe sand."),
    ("Lemons taste sour.", "Lemons taste salty."),
    ("A kilometre is one thousand metres.", "A kilometre is ten metres."),
    ("The Pacific is an ocean.", "The Pacific is a desert."),
    ("Paper is made from wood.", "Paper is made from glass."),
    ("January is the first month of the year.", "January is the last month of the year."),
    ("Fire is hot.", "Fire is cold."),
    ("A minute has sixty seconds.", "A minute has six seconds."),
    ("Birds lay eggs.", "Birds lay bricks."),
    ("Cars need fuel or electricity to run.", "Cars run on sand."),
    ("The alphabet starts with the letter A.", "The alphabet starts with the letter Q."),
    ("Milk comes from cows.", "Milk comes from trees."),
    ("Rain falls from clouds.", "Rain falls from the ground."),
    ("The Earth goes around the Sun.", "The Sun goes around the Moon."),
    ("A piano has keys.", "A piano has wings."),
    ("Winter is colder than summer in Canada.", "Summer is colder than winter in Canada."),
    ("Elephants are larger than mice.", "Mice are larger than elephants."),
    ("A pound of feathers weighs as much as a pound of stone.", "A pound of feathers weighs more than a ton of stone."),
    ("The heart pumps blood.", "The heart pumps air."),
    ("Spiders spin webs.", "Spiders spin wool."),
    ("Trees grow from seeds.", "Trees grow from stones."),
    ("Ten is an even number.", "Seven is an even number."),
    ("Nine is an odd number.", "Eight is an odd number."),
]


def arithmetic(rng: random.Random) -> tuple[list[str], list[str]]:
    true, false = [], []
    for a in range(2, 13):
        for b in range(2, 13):
            for word, value in (("plus", a + b), ("times", a * b)):
                true.append(f"{a} {word} {b} is {value}.")
                wrong = value + rng.choice([-3, -2, -1, 1, 2, 3])
                false.append(f"{a} {word} {b} is {wrong}.")
    for a in range(2, 13):
        for b in range(0, 13):
            if a != b:
                bigger, smaller = max(a, b), min(a, b)
                true.append(f"{NUMBER_WORDS[bigger].capitalize()} is greater than {NUMBER_WORDS[smaller]}.")
                false.append(f"{NUMBER_WORDS[smaller].capitalize()} is greater than {NUMBER_WORDS[bigger]}.")
    return true, false


def capitals(rng: random.Random) -> tuple[list[str], list[str]]:
    true, false = [], []
    names = list(CAPITALS)
    for country, city in CAPITALS.items():
        true.append(f"The capital of {country} is {city}.")
        for other in rng.sample([n for n in names if n != country], 2):
            false.append(f"The capital of {country} is {CAPITALS[other]}.")
        true.append(f"{city} is the capital of {country}.")
        false.append(f"{CAPITALS[rng.choice([n for n in names if n != country])]} is the capital of {country}.")
    return true, false


def continents(rng: random.Random) -> tuple[list[str], list[str]]:
    true, false = [], []
    for continent, countries in CONTINENTS.items():
        for country in countries:
            name = country[0].upper() + country[1:]
            true.append(f"{name} is in {continent}.")
            for other in [c for c in CONTINENTS if c != continent]:
                false.append(f"{name} is in {other}.")
    return true, false


def animals(rng: random.Random) -> tuple[list[str], list[str]]:
    true, false = [], []
    for kind, names in ANIMAL_CLASS.items():
        for animal in names:
            article = "An" if animal[0] in "aeiou" else "A"
            true.append(f"{article} {animal} is a {kind}.")
            for other in [k for k in ANIMAL_CLASS if k != kind]:
                false.append(f"{article} {animal} is a {other}.")
    for animal, legs in LEGS.items():
        true.append(f"{animal} has {NUMBER_WORDS[legs]} legs.")
        for wrong in {2, 4, 6, 8} - {legs}:
            false.append(f"{animal} has {NUMBER_WORDS[wrong]} legs.")
    return true, false


def everyday(rng: random.Random) -> tuple[list[str], list[str]]:
    return [t for t, _ in EVERYDAY], [f for _, f in EVERYDAY]


def main() -> None:
    rng = random.Random(20261128)
    rows = []
    for kind, make in (("arithmetic", arithmetic), ("capitals", capitals), ("continents", continents),
                       ("animals", animals), ("everyday", everyday)):
        true, false = make(rng)
        for label, pool in (("true", true), ("false", false)):
            pool = sorted(set(pool))
            for text in rng.sample(pool, PER_KIND_AND_LABEL):
                rows.append({"text": text, "label": label, "kind": kind})
    rng.shuffle(rows)
    out = write_data_csv(Path(__file__).resolve().parent, rows, ["text", "label", "kind"])
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
