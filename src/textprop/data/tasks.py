"""Built-in tasks generated on the spot: no download, same examples for the same seed.

They mimic two BIG-Bench Hard tasks at a difficulty a 0.5B model gets partly right, so an
optimization run has room to improve:

- `object_counting`: "I have a flute, two cats, ... How many musical instruments do I have?"
  5-10 item mentions, some with a count in words, with distractors from other categories.
- `word_sorting`: "Sort the following words alphabetically: List: ..." with 4-10 words.
- `date_normalization`: "Write this date in the standard form: 24.2.1990" -> "1990-02-24";
  the format is never stated, so the prompt must learn it from the metric's feedback.

The test split is generated first from its own seeded stream, then val, then train, each
skipping inputs already used: the splits are disjoint, and the test set does not change when
`n_train` or `n_val` do.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from textprop.data.dataset import Dataset, Example, Splits
from textprop.errors import ConfigError


@dataclass(frozen=True)
class Generated:
    input: str
    target: str
    fields: Mapping[str, str]


@dataclass(frozen=True)
class BuiltinTask:
    """A task generator, and the metric (a `get_metric` name) that scores it."""

    name: str
    description: str
    generate: Callable[[random.Random], Generated]
    metric: str


# --- object counting ------------------------------------------------------------------------

# (singular, plural); the article is "an" before a vowel letter, so no item starts with "u".
ITEMS: dict[str, tuple[tuple[str, str], ...]] = {
    "musical instruments": (
        ("piano", "pianos"), ("flute", "flutes"), ("violin", "violins"),
        ("trumpet", "trumpets"), ("drum", "drums"), ("clarinet", "clarinets"),
        ("trombone", "trombones"), ("accordion", "accordions"), ("guitar", "guitars"),
        ("cello", "cellos"), ("harp", "harps"), ("saxophone", "saxophones"),
        ("banjo", "banjos"), ("harmonica", "harmonicas"), ("tuba", "tubas"), ("oboe", "oboes"),
    ),
    "fruits": (
        ("apple", "apples"), ("banana", "bananas"), ("orange", "oranges"),
        ("peach", "peaches"), ("plum", "plums"), ("grape", "grapes"),
        ("strawberry", "strawberries"), ("raspberry", "raspberries"),
        ("blackberry", "blackberries"), ("nectarine", "nectarines"), ("pear", "pears"),
        ("mango", "mangoes"), ("cherry", "cherries"), ("apricot", "apricots"),
        ("lemon", "lemons"), ("fig", "figs"),
    ),
    "vegetables": (
        ("carrot", "carrots"), ("potato", "potatoes"), ("onion", "onions"),
        ("cabbage", "cabbages"), ("yam", "yams"), ("turnip", "turnips"),
        ("radish", "radishes"), ("beet", "beets"), ("leek", "leeks"), ("parsnip", "parsnips"),
        ("head of broccoli", "heads of broccoli"), ("stalk of celery", "stalks of celery"),
        ("head of lettuce", "heads of lettuce"), ("cauliflower", "cauliflowers"),
    ),
    "animals": (
        ("cat", "cats"), ("dog", "dogs"), ("pig", "pigs"), ("rabbit", "rabbits"),
        ("cow", "cows"), ("goat", "goats"), ("frog", "frogs"), ("mouse", "mice"),
        ("bear", "bears"), ("donkey", "donkeys"), ("snake", "snakes"),
        ("chicken", "chickens"), ("duck", "ducks"), ("sheep", "sheep"), ("goose", "geese"),
        ("horse", "horses"),
    ),
    # distractors only: asking for "objects" would make every item count
    "household objects": (
        ("chair", "chairs"), ("table", "tables"), ("lamp", "lamps"), ("bed", "beds"),
        ("couch", "couches"), ("stove", "stoves"), ("fridge", "fridges"),
        ("microwave", "microwaves"), ("oven", "ovens"), ("toaster", "toasters"),
        ("car", "cars"), ("kettle", "kettles"),
    ),
}
ASKED = ("musical instruments", "fruits", "vegetables", "animals")
COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}
MULTIPLIER_CHANCE = 0.3


def object_counting(rng: random.Random) -> Generated:
    """One object counting question; the target is the number of items of the asked kind."""
    asked = rng.choice(ASKED)
    mentions = rng.randint(5, 10)
    n_asked = rng.randint(2, mentions - 1)
    others = rng.sample([c for c in ITEMS if c != asked], rng.randint(1, 2))
    pool = [item for c in others for item in ITEMS[c]]
    chosen = [(item, True) for item in rng.sample(ITEMS[asked], n_asked)]
    chosen += [(item, False) for item in rng.sample(pool, mentions - n_asked)]
    rng.shuffle(chosen)
    phrases, total = [], 0
    for (singular, plural), counted in chosen:
        count = rng.randint(2, 5) if rng.random() < MULTIPLIER_CHANCE else 1
        total += count if counted else 0
        phrases.append(_with_count(count, singular, plural))
    listing = ", ".join(phrases[:-1]) + f", and {phrases[-1]}"
    return Generated(f"I have {listing}. How many {asked} do I have?", str(total),
                     {"category": asked})


def _with_count(count: int, singular: str, plural: str) -> str:
    if count == 1:
        return f"{'an' if singular[0] in 'aeiou' else 'a'} {singular}"
    return f"{COUNT_WORDS[count]} {plural}"


# --- word sorting ---------------------------------------------------------------------------

# Everyday words; several share first letters or prefixes so that sorting needs more than
# the first letter.
WORDS: tuple[str, ...] = tuple("""
    anchor apple april arrow artist autumn badge bake balcony banner barrel basket beacon
    beard berry blanket bloom border bottle bounce bracket branch bridge brother bucket
    cabin cactus camera candle canvas carpet castle cellar cherry chimney circle clock
    cloud collar copper cotton county cradle crystal dagger dance desert diamond dinner
    doctor dolphin donkey dragon drawer eagle earth echo elbow ember engine essay evening
    fabric falcon feather fence fiddle finger forest fossil fountain frost garden garlic
    gather giant ginger glacier glass glove goblet gravel guitar hammer harbor harvest helmet
    hollow honey horizon hunter island ivory jacket jelly jersey jigsaw journal jungle kennel
    kettle kingdom kitten ladder lantern leather lemon letter lily linen lizard lobster
    magnet mango marble market meadow melody mirror mitten monkey mosaic muffin napkin
    needle nectar noodle normal nugget oatmeal ocean olive onion orbit orchard otter oyster
    paddle palace panther parcel pebble pencil pepper pillow planet pocket potato puddle
    puzzle quarry quartz quiet quilt rabbit radish rattle raven ribbon river rocket saddle
    salmon sandal scarf shadow shelter shovel silver sketch slipper socket spider spruce
    stable sugar summer tablet tailor teapot thimble thunder timber tomato tunnel turtle
    umbrella uncle velvet violet valley vessel village wagon walnut wander whistle willow
    window winter wizard yellow yogurt zebra zipper
""".split())


def word_sorting(rng: random.Random) -> Generated:
    """One word sorting question; the target is the words in alphabetical order."""
    words = rng.sample(WORDS, rng.randint(4, 10))
    ordered = sorted(words)
    while words == ordered:  # an already sorted list would teach nothing
        rng.shuffle(words)
    return Generated(f"Sort the following words alphabetically: List: {' '.join(words)}",
                     " ".join(ordered), {})


# --- date normalization -------------------------------------------------------------------

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")


def date_normalization(rng: random.Random) -> Generated:
    """A date written one of several ways; the target is its ISO form (YYYY-MM-DD).

    The question never names the format: a pipeline has to learn the house style from
    feedback ("expected '1990-02-24', got '24 February 1990'"), the way real teams' output
    conventions are learned. Day-first numeric dates ("24.2.1990") make it more than a
    formatting rule.
    """
    year, month, day = rng.randint(1950, 2035), rng.randint(1, 12), rng.randint(1, 28)
    name = MONTHS[month - 1]
    written = rng.choice((
        f"{name} {day}, {year}", f"{day} {name} {year}", f"{name[:3]} {day} {year}",
        f"{day}.{month}.{year}", f"{year}/{month}/{day}", f"the {_ordinal(day)} of {name}, {year}",
    ))
    return Generated(f"Write this date in the standard form: {written}",
                     f"{year:04d}-{month:02d}-{day:02d}", {"written": written})


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# --- registry -------------------------------------------------------------------------------

BUILTIN_TASKS: Mapping[str, BuiltinTask] = {
    task.name: task for task in (
        BuiltinTask("object_counting", "count the items of one kind in a list (BBH style)",
                    object_counting, metric="numeric"),
        BuiltinTask("word_sorting", "sort a list of words alphabetically (BBH style)",
                    word_sorting, metric="exact_match"),
        BuiltinTask("date_normalization", "write a date in the house style (ISO 8601)",
                    date_normalization, metric="exact_match"),
    )
}
MAX_ATTEMPTS_PER_EXAMPLE = 50


def builtin_task(name: str, *, n_train: int, n_val: int, n_test: int, seed: int = 0) -> Splits:
    """Generate the train, val and test splits of built-in task `name`, fixed by `seed`."""
    task = BUILTIN_TASKS.get(name)
    if task is None:
        raise ConfigError(f"unknown built-in task {name!r}; available: "
                          f"{', '.join(BUILTIN_TASKS)}")
    for label, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError(f"{label} must be a non-negative integer, got {n!r}")
    seen: set[str] = set()
    test = _generate(task, "test", n_test, seed, seen)
    val = _generate(task, "val", n_val, seed, seen)
    train = _generate(task, "train", n_train, seed, seen)
    return Splits(train, val, test)


def _generate(task: BuiltinTask, split: str, n: int, seed: int, seen: set[str]) -> Dataset:
    # A string seed is hashed with SHA-512 by `random`: stable across runs and platforms.
    rng = random.Random(f"{task.name}:{seed}:{split}")
    examples: list[Example] = []
    attempts = 0
    while len(examples) < n:
        attempts += 1
        if attempts > MAX_ATTEMPTS_PER_EXAMPLE * n:
            raise ConfigError(f"cannot generate {n} distinct {task.name} examples for the "
                              f"{split} split; ask for fewer")
        generated = task.generate(rng)
        if generated.input in seen:
            continue
        seen.add(generated.input)
        index = len(examples)
        examples.append(Example(
            id=f"{task.name}-s{seed}-{split}-{index}", input=generated.input,
            target=generated.target, fields=generated.fields,
            source=f"builtin:{task.name}(seed={seed}):{split}:{index}"))
    return Dataset(examples, f"{task.name}-{split}")
