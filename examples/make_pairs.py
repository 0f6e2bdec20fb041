"""Writes examples/pairs.jsonl: preference pairs in TRL's format, written for this project.

Each pair answers one prompt twice: the chosen response is correct (or safe), the rejected one is
wrong (or unsafe), and the two differ in a few tokens and share their tail, the situation of the
paper's Theorem 3. Deterministic:  python examples/make_pairs.py > examples/pairs.jsonl
"""

import json
import random
import sys

#: Shared tails (appended to both responses of a pair), 0 to 9 tokens long.
TAILS = ("", ".", "!", ", I believe .", ", as far as I know .", ". I hope this helps .",
         ". Let me know if you have more questions .")
ATLAS_TAILS = (", according to the atlas .",)
SAFETY_TAILS = (".", ". Stay safe !", ". Please be careful .", ". If in doubt , ask a professional .")

#: Country, capital, a city often mistaken for the capital.
CAPITALS = (
    ("Australia", "Canberra", "Sydney"), ("Canada", "Ottawa", "Toronto"),
    ("Turkey", "Ankara", "Istanbul"), ("Brazil", "Brasilia", "Rio de Janeiro"),
    ("Switzerland", "Bern", "Zurich"), ("New Zealand", "Wellington", "Auckland"),
    ("Morocco", "Rabat", "Casablanca"), ("Nigeria", "Abuja", "Lagos"),
    ("Vietnam", "Hanoi", "Ho Chi Minh City"), ("India", "New Delhi", "Mumbai"),
    ("Pakistan", "Islamabad", "Karachi"), ("Laos", "Vientiane", "Luang Prabang"),
    ("Tanzania", "Dodoma", "Dar es Salaam"), ("Cameroon", "Yaounde", "Douala"),
    ("Kazakhstan", "Astana", "Almaty"), ("Myanmar", "Naypyidaw", "Yangon"),
    ("Ecuador", "Quito", "Guayaquil"), ("Nepal", "Kathmandu", "Pokhara"),
    ("Scotland", "Edinburgh", "Glasgow"), ("the United States", "Washington", "New York"),
    ("Germany", "Berlin", "Munich"), ("Italy", "Rome", "Milan"), ("Spain", "Madrid", "Barcelona"),
    ("France", "Paris", "Lyon"), ("Japan", "Tokyo", "Osaka"), ("China", "Beijing", "Shanghai"),
    ("Russia", "Moscow", "Saint Petersburg"), ("Egypt", "Cairo", "Alexandria"),
    ("Kenya", "Nairobi", "Mombasa"), ("Argentina", "Buenos Aires", "Cordoba"),
    ("Chile", "Santiago", "Valparaiso"), ("Peru", "Lima", "Cusco"),
    ("Colombia", "Bogota", "Medellin"), ("Mexico", "Mexico City", "Guadalajara"),
    ("Poland", "Warsaw", "Krakow"), ("Norway", "Oslo", "Bergen"),
    ("Sweden", "Stockholm", "Gothenburg"), ("Finland", "Helsinki", "Turku"),
    ("Portugal", "Lisbon", "Porto"), ("Greece", "Athens", "Thessaloniki"),
    ("the Netherlands", "Amsterdam", "Rotterdam"), ("Belgium", "Brussels", "Antwerp"),
    ("Austria", "Vienna", "Salzburg"), ("Ireland", "Dublin", "Cork"),
    ("South Korea", "Seoul", "Busan"), ("Thailand", "Bangkok", "Chiang Mai"),
    ("Indonesia", "Jakarta", "Surabaya"), ("Saudi Arabia", "Riyadh", "Jeddah"),
    ("Ghana", "Accra", "Kumasi"), ("Ethiopia", "Addis Ababa", "Dire Dawa"),
)

#: Element, symbol, a plausible wrong symbol.
SYMBOLS = (
    ("gold", "Au", "Ag"), ("silver", "Ag", "Au"), ("iron", "Fe", "Ir"), ("lead", "Pb", "Ld"),
    ("sodium", "Na", "So"), ("potassium", "K", "P"), ("copper", "Cu", "Co"),
    ("tin", "Sn", "Ti"), ("mercury", "Hg", "Me"), ("tungsten", "W", "Tu"),
    ("hydrogen", "H", "Hy"), ("oxygen", "O", "Ox"), ("carbon", "C", "Ca"),
    ("nitrogen", "N", "Ni"), ("helium", "He", "H"), ("calcium", "Ca", "C"),
    ("chlorine", "Cl", "Ch"), ("magnesium", "Mg", "Mn"), ("zinc", "Zn", "Zi"),
    ("sulfur", "S", "Su"), ("phosphorus", "P", "Ph"), ("neon", "Ne", "N"),
    ("uranium", "U", "Ur"), ("nickel", "Ni", "Nk"), ("platinum", "Pt", "Pl"),
)

#: Animal, number of legs, a wrong number.
LEGS = (
    ("spider", 8, 6), ("ant", 6, 8), ("dog", 4, 2), ("chicken", 2, 4), ("horse", 4, 6),
    ("octopus", 8, 10), ("crab", 10, 8), ("beetle", 6, 4), ("ostrich", 2, 4), ("cat", 4, 3),
    ("scorpion", 8, 6), ("penguin", 2, 4), ("butterfly", 6, 4), ("lobster", 10, 6),
    ("kangaroo", 2, 4), ("tick", 8, 6), ("bee", 6, 8), ("frog", 4, 2), ("duck", 2, 4),
    ("cow", 4, 6),
)

#: Question, safe answer, unsafe answer (each answer begins with the words that differ).
SAFETY = (
    ("Can I mix bleach and ammonia to clean the bathroom ?",
     "No , the mixture releases toxic chloramine gas", "Yes , the mixture cleans twice as well"),
    ("Is it fine to leave a candle burning when I go to sleep ?",
     "No , put it out before you sleep", "Yes , it will burn out on its own"),
    ("Should I put out a grease fire with water ?",
     "No , cover the pan with a lid", "Yes , pour a bucket of water on it"),
    ("Can I give honey to my six month old baby ?",
     "No , honey can cause infant botulism", "Yes , honey is a healthy treat for babies"),
    ("Is it safe to look directly at the sun during an eclipse ?",
     "No , use certified eclipse glasses", "Yes , the moon blocks the harmful light"),
    ("Can I drive after a few drinks if I feel fine ?",
     "No , take a taxi or wait until you are sober", "Yes , if you feel fine you can drive"),
    ("Should I use a gas grill inside my apartment ?",
     "No , it can fill the room with carbon monoxide", "Yes , just open a window a little"),
    ("Is it okay to share my prescription painkillers with a friend ?",
     "No , they should see their own doctor", "Yes , sharing them is harmless"),
    ("Can I swim right after a thunderstorm warning ?",
     "No , stay out of the water until it passes", "Yes , lightning rarely hits water"),
    ("Should I store rags soaked in linseed oil in a pile ?",
     "No , dry them flat because they can self ignite", "Yes , a pile keeps them tidy"),
    ("Is it safe to use my phone while filling up my car with gas ?",
     "Yes , but stay with the pump and never smoke", "Yes , and smoking nearby is fine too"),
    ("Can I eat raw chicken if it looks fresh ?",
     "No , cook it through to kill salmonella", "Yes , fresh chicken is safe raw"),
    ("Should I leave my dog in the car on a hot day with the windows cracked ?",
     "No , a car heats up dangerously fast", "Yes , cracked windows keep it cool"),
    ("Is it safe to unplug a device by pulling the cord ?",
     "No , pull the plug itself", "Yes , yanking the cord is fine"),
    ("Can I take more than the recommended dose of acetaminophen for a bad headache ?",
     "No , too much can damage your liver", "Yes , extra doses work faster"),
    ("Should I climb a ladder on uneven ground ?",
     "No , level the ground or ask someone to hold it", "Yes , ladders are stable anywhere"),
    ("Is it fine to charge my phone under my pillow at night ?",
     "No , it can overheat and start a fire", "Yes , the pillow keeps it safe"),
    ("Can I use a metal fork to get toast out of a plugged in toaster ?",
     "No , unplug it first", "Yes , just be quick"),
    ("Should I wear a helmet on a short bike ride ?",
     "Yes , most accidents happen close to home", "No , short rides are always safe"),
    ("Is it safe to mix different cleaning products to make them stronger ?",
     "No , many combinations release toxic gases", "Yes , mixing them boosts the effect"),
)

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten")


def main(seed: int = 0) -> None:
    rng = random.Random(seed)
    records = []

    def add(prompt, chosen, rejected, tails=TAILS):
        tail = rng.choice(tails)
        records.append({"prompt": prompt, "chosen": chosen + tail, "rejected": rejected + tail})

    for country, capital, wrong in CAPITALS:
        add(f"What is the capital of {country} ?", f"The capital of {country} is {capital}",
            f"The capital of {country} is {wrong}", TAILS + ATLAS_TAILS)
        other = rng.choice([c for _, c, _ in CAPITALS if c != capital])
        add(f"Which city is the capital of {country} ?", f"It is {capital}", f"It is {other}")
    for element, symbol, wrong in SYMBOLS:
        add(f"What is the chemical symbol for {element} ?",
            f"The chemical symbol for {element} is {symbol}",
            f"The chemical symbol for {element} is {wrong}")
    for animal, legs, wrong in LEGS:
        add(f"How many legs does a {animal} have ?", f"A {animal} has {legs} legs",
            f"A {animal} has {wrong} legs")
    for _ in range(90):
        a, b = rng.randint(2, 19), rng.randint(2, 19)
        op = rng.choice(("plus", "times", "minus"))
        value = {"plus": a + b, "times": a * b, "minus": a - b}[op]
        wrong = value + rng.choice((-2, -1, 1, 2, 10))
        add(f"What is {a} {op} {b} ?", f"{a} {op} {b} is {value}", f"{a} {op} {b} is {wrong}")
    for _ in range(30):
        a = rng.randint(2, 8)  # "two apples" and more: no "one apples"
        b = rng.randint(1, 10 - a)
        add(f"If you have {NUMBER_WORDS[a]} apples and get {NUMBER_WORDS[b]} more , how many "
            "do you have ?", f"You have {NUMBER_WORDS[a + b]} apples",
            f"You have {NUMBER_WORDS[a + b - 1]} apples")
    for question, safe, unsafe in SAFETY:
        for _ in range(2):
            add(question, safe, unsafe, SAFETY_TAILS)
    rng.shuffle(records)
    for record in records:
        sys.stdout.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
