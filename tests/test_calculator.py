"""The calculator reward: claims in real steps, exact and tolerant checks, hostile input."""
from __future__ import annotations

import random
import time
import tracemalloc
from fractions import Fraction

import pytest

from specs_local.calculator import (REWARD_FALSE, REWARD_HOLDS, check_claims,
                                    check_step, evaluate, extract_claims)

HOLDS, FALSE = REWARD_HOLDS, REWARD_FALSE

# Steps copied from ../shared/data (GSM8K and MATH500 solutions), with the claims the calculator
# must find (rendered as plain arithmetic) and the reward it must give.
REAL_STEPS = [
    ('Janet sells 16 - 3 - 4 = 9 duck eggs a day.',
     [('16-3-4', '9')], HOLDS),
    ('She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer’s market.',
     [('9*2', '18')], HOLDS),
    ('It takes 2/2=<<2/2=1>>1 bolt of white fiber',
     [('2/2', '1')], HOLDS),
    ('The cost of the house and repairs came out to 80,000+50,000=$130,000',
     [('80000+50000', '130000')], HOLDS),
    ('So he makes 3120*$0.4=$1248 every week',
     [('3120*0.4', '1248')], HOLDS),
    ('So they make a profit of 200 hours * $50/hour = $10000 a day from patient visits',
     [('200*50', '10000')], HOLDS),
    ('Dolly and Pandora both read all 3 books, so 3 books/person x 2 people = 6 books total',
     [('3*2', '6')], HOLDS),
    ('Four fifths of the second scene’s lines are Sean’s, so he has to memorize 4 * 60 / 5 = 4 * 12 = 48 lines.',
     [('4*60/5', '4*12'), ('4*12', '48')], HOLDS),
    ('There were 10 bike tires to fill up because 2 times 5 equals 10.',
     [('2*5', '10')], HOLDS),
    ('They have raised $174 because 83 plus 91 equals 174.',
     [('83+91', '174')], HOLDS),
    ('They can each make 7 more because 14 divided by 2 equals 7.',
     [('14/2', '7')], HOLDS),
    ('He has spent $3.5 on peaches and pears because 7 x .5 = 3.5',
     [('7*0.5', '3.5')], HOLDS),
    ('Larry has 1 /3 as many gerbils as he has fish, for 21/3= 7 gerbils',
     [('21/3', '7')], HOLDS),
    ('x = 100/4 = 25, which means each adult gets 25% of the watermelon.',
     [('100/4', '25')], HOLDS),
    ('Sister = 6/2 + 4 = 7',
     [('6/2+4', '7')], HOLDS),
    ('The percentages have to sum up to 100 so 2x+2x = 100 (after simplification)',
     [], None),
    ('I = <<6=6>>6',
     [], None),
    ('There were 90 bees total that left the hive - 15 bees that already returned = 75 bees that return to the hive in the last 6 hours of the day.',
     [('90-15', '75')], HOLDS),
    ('Jordan plays video games for 2 hours every day x 7 days in a week = 14 hours a week.',
     [('2*7', '14')], HOLDS),
    ('Howie wants to get cupcakes for his 25 classmates + his 1 teacher + 1 himself = 27 people.',
     [('25+1+1', '27')], HOLDS),
    ('Overall, Emma has 120 – 80 - 15 = 25 more points than Ava.',
     [('120-80-15', '25')], HOLDS),
    ('Since 2/5 is equal to 12.8 hectares, then 1/5 is equal to 12.8/2 = 6.4 hectares.',
     [('12.8/2', '6.4')], HOLDS),
    ('Since Brinley wants a score of 93, we know her total score needs to be 93 (average) * 5 (tests) = 465 points',
     [('93*5', '465')], HOLDS),
    ('First find how many gigabytes are in 40% of the file: 200 GB * 40% = 80 GB',
     [('200*40%', '80')], HOLDS),
    ('This is 12/20 x 100% = 60% of the entire students.',
     [('12/20*100%', '60%')], HOLDS),
    ('Scottish Unicorns:27(1/3)=9',
     [('27*1/3', '9')], HOLDS),
    ('Dave ate 14 french fries, so the seagull ate 14 * 1/2 = 14 / 2 = 7 fries.',
     [('14*1/2', '14/2'), ('14/2', '7')], HOLDS),
    # the next three are real arithmetic errors in the data files
    ('So, Suzzane has $32 - $20 = $300 left.',
     [('32-20', '300')], FALSE),
    ('He can buy 69 gum balls because 3.65 divided by .05 equals 69',
     [('3.65/0.05', '69')], FALSE),
    ('First prime factorize $196=2^2\\cdot7^2$.',
     [('196', '2^2*7^2')], HOLDS),
    ('We have that $r = \\sqrt{0^2 + 3^2} = 3.$',
     [('sqrt(0^2+3^2)', '3')], HOLDS),
    ('$f(-2)+f(-1)+f(0)=\\frac{3(-2)-2}{-2-2}+\\frac{3(-1)-2}{-1-2}+\\frac{3(0)-2}{0-2}=\\frac{-8}{-4}+\\frac{-5}{-3}+\\frac{-2}{-2}=2+\\frac{5}{3}+1=\\boxed{\\frac{14}{3}}$',
     [('(3*(-2)-2)/(-2-2)+(3*(-1)-2)/(-1-2)+(3*0-2)/(0-2)', '-8/(-4)+-5/(-3)+-2/(-2)'), ('-8/(-4)+-5/(-3)+-2/(-2)', '2+5/3+1'), ('2+5/3+1', '14/3')], HOLDS),
    ('There are 100 numbers in the set so the desired probability is $\\dfrac{34}{100} = \\boxed{\\dfrac{17}{50}}$.',
     [('34/100', '17/50')], HOLDS),
    ('In total, there are $3\\times 3=9$ possibilities for the prime factorization of a divisor of 196.',
     [('3*3', '9')], HOLDS),
    ('We get $$\\frac{1}{5}\\cdot \\frac{8}{7}\\div \\frac{12}{20}=\\frac{1}{5}\\cdot \\frac{8}{7}\\cdot \\frac{20}{12}.$$Now, notice that $5$ and $20$ have a common factor of $5$.',
     [('1/5*8/7/(12/20)', '1/5*8/7*20/12')], HOLDS),
    ('We use the distance formula:  \\begin{align*}\n\\sqrt{(2 - (-4))^2 + ((-6) - 3)^2} &= \\sqrt{6^2 + (-9)^2}\\\\\n& = \\sqrt{36 + 81}\\\\\n& = \\sqrt{117} = \\boxed{3\\sqrt{13}}.\n\\end{align*}',
     [('sqrt((2-(-4))^2+(-6-3)^2)', 'sqrt(6^2+(-9)^2)'), ('sqrt(6^2+(-9)^2)', 'sqrt(36+81)'), ('sqrt(36+81)', 'sqrt(117)'), ('sqrt(117)', '3*sqrt(13)')], HOLDS),
    ("If 40 calories is equal to $2\\%=\\frac{2}{100}=\\frac{1}{50}$ of a person's daily requirement, then a person's daily caloric requirement is: $$40\\cdot 50=\\boxed{2000}$$",
     [('2%', '2/100'), ('2/100', '1/50'), ('40*50', '2000')], HOLDS),
    ('By the Pythagorean Theorem, \\[(AB)^2=1^2+\\left(\\frac{3}{4}\\right)^2=1+\\frac{9}{16}=\\frac{25}{16},\\]so $AB=\\frac{5}{4}=1\\frac{1}{4}$, or $\\boxed{1.25}$.',
     [('1^2+(3/4)^2', '1+9/16'), ('1+9/16', '25/16')], HOLDS),
    ('Since $90^3=729,\\!000$, $\\text{AB}$ is greater than 90.',
     [('90^3', '729000')], HOLDS),
    ('That means that the investment will have grown to $\\$24,\\!000 \\cdot 1.01^{30} \\approx \\boxed{\\$32,\\!348}$, to the nearest dollar.',
     [('24000*1.01^30', '32348')], HOLDS),
    ('The area of the rectangle is $(5\\text{ cm})(3\\text{ cm})=15\\text{ cm}^2$, and the area of the triangle is $\\frac{1}{2}(3\\text{ cm})(9\\text{ cm}-5\\text{ cm})=6\\text{ cm}^2$.',
     [('5*3', '15'), ('1/2*3*(9-5)', '6')], HOLDS),
    ('The largest eight-digit base 2 integer is 1 less than the smallest nine-digit base 2 integer, which is $$ 100000000_{2} = 1 \\cdot 2^8 = 256. $$Thus, the largest eight-digit base 2 integer is $256 - 1 = \\boxed{255}$.',
     [('1*2^8', '256'), ('256-1', '255')], HOLDS),
    ('Writing the left-hand side with a common denominator, we have$$\\dfrac{x}{2} + \\dfrac{x}{3} = \\dfrac{3x}{6} + \\dfrac{2x}{6} = \\dfrac{5x}{6},$$ so our equation is $$\\dfrac{5x}{6} = 5.$$Multiplying both sides by $\\dfrac{6}{5}$ gives $$x = 5\\cdot \\dfrac{6}{5} = \\boxed{6}.$$',
     [('5*6/5', '6')], HOLDS),
    ('The discriminant of this quadratic equation is $(-4)^2 + 4 \\cdot 1 \\cdot (-1) = 20$, which is positive, so the quadratic has two distinct real roots.',
     [('(-4)^2+4*1*(-1)', '20')], FALSE),
    ('Susan bought $4$ tickets with $25\\%$ discount: $$4 \\times \\$20 = \\$80.$$With a $25$ percent discount, she paid $\\$80 * .75 = \\$60.$',
     [('4*20', '80'), ('80*0.75', '60')], HOLDS),
]


@pytest.mark.parametrize("step, claims, reward", REAL_STEPS, ids=[s[:40] for s, _, _ in REAL_STEPS])
def test_claims_found_in_real_steps(step, claims, reward):
    assert [(c.left, c.right) for c in extract_claims(step)] == claims
    assert check_step(step) == reward


def test_the_briefs_example_has_one_claim():
    assert [(c.left, c.right) for c in extract_claims("She sold 48/2 = 24 clips in May.")] == [("48/2", "24")]
    assert check_step("She sold 48/2 = 24 clips in May.") == HOLDS
    assert check_step("She sold 48/2 = 42 clips in May.") == FALSE


def test_fractions_are_exact():
    assert evaluate("1/3 + 1/6") == Fraction(1, 2)
    assert evaluate("0.1+0.2") == Fraction(3, 10)
    assert evaluate("\\frac{3}{4} \\times 2^{-2}") == Fraction(3, 16)
    assert check_step("1/3 + 1/6 = 1/2") == HOLDS
    assert check_step("0.1+0.2 = 0.3") == HOLDS
    assert check_step("1/3 + 1/6 = 1/3") == FALSE
    assert check_step("0.1+0.2 = 0.31") == FALSE


@pytest.mark.parametrize("step, reward", [
    ("22/7 = 3.14", HOLDS),  # rounded to the written decimals
    ("22/7 = 3.15", FALSE),
    ("\\sqrt{2} = 1.414", HOLDS),  # irrational: float with the written precision
    ("\\sqrt{2} = 1.42", FALSE),
    ("2/3 = 0.67", HOLDS),
    ("2/3 = 0.66", HOLDS),  # truncated
    ("2/3 = 0.65", FALSE),
    ("-22/7 = -3.14", HOLDS),
    ("-22/7 = -3.15", FALSE),
    ("7/2 = 3.6", FALSE),  # 3.5 is exact at one decimal: nothing to round
    ("2/3 = 66.67%", HOLDS),
    ("1/5 = 20%", HOLDS),
    ("0.25 * 100 = 25%", HOLDS),  # % read as a plain number when that is how it was written
    ("1/5 = 25%", FALSE),
    ("25% * 80 = 20", HOLDS),
    ("\\sqrt{16} = 4", HOLDS),
    ("8^{1/3} = 2", HOLDS),
    ("$\\sqrt{2}\\cdot\\sqrt{8} = 4$", HOLDS),
])
def test_written_precision_is_the_tolerance(step, reward):
    assert check_step(step) == reward


@pytest.mark.parametrize("step", [
    "2x + 3 = 7",  # an equation in a variable
    "x = 5",
    "half of 80 = 40",  # the operation is in words
    "15 minutes = 15/60 hours",  # a unit conversion
    "50 cents * 4 = $2",
    "2 hours + 30 minutes = 2.5 hours",
    "The remainder of 17/5 = 2",
    "The average of 3+4+5 = 4",
    "a - 3 + 4 = 7",  # the expression began before the side
    "7/2 = 4 buses",  # a whole number for a fraction may round on purpose
    "48 = 120% of the actual number",
    "The time is 10:30 + 2 = 12:30",
    "Wait, 3 + 4 = 8? No, 3 + 4 = 7.",  # a question is not a claim
])
def test_ambiguous_text_is_not_flagged(step):
    assert check_step(step) != FALSE


def test_run_on_chains_keep_computing():
    assert check_step("She has 16 - 3 = 13 - 4 = 9 eggs left.") == HOLDS
    assert check_step("She has 16 - 3 = 14 - 4 = 10 eggs left.") == FALSE


# -- hostile input: untrusted text must never raise, hang or eat memory -------------------------

HOSTILE = {
    "power tower": "9^9^9^9 = 5",
    "huge power": "2^99999999 = 1",
    "huge negative power": "2^-99999999 = 0",
    "huge float power": "\\sqrt{2}^{99999} = 1",
    "deep nesting": "(" * 10_000 + "1" + ")" * 10_000 + " = 1",
    "deep roots": "\\sqrt{" * 3_000 + "2" + "}" * 3_000 + " = 1",
    "unbalanced": "(" * 7_000 + " = 1",
    "100k digits": "1" * 100_000 + " + 1 = 2",
    "7k digits": "1" * 7_000 + " + 1 = 2",
    "long product": "*".join(["99999999999"] * 600) + " = 1",
    "long chain": "=".join(["1"] * 3_000),
    "code": "__import__('os').system('rm -rf /') = 0",
    "lambda": "(lambda: 1)() = 1; exec('print(1)') = 1",
    "division by zero": "1/0 = 1",
    "zero to the zero": "0^0 = 1",
    "negative root": "\\sqrt{-4} = 2",
    "dollars": "$" * 7_000 + "2^99999999 = 1",
    "annotations": "<<9^9^9=1>>" * 500,
}


CHECKS = (check_step, check_claims, evaluate)


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_input_is_not_checkable_and_fast(name):
    for check in CHECKS:
        started = time.perf_counter()
        result = check(HOSTILE[name])
        assert time.perf_counter() - started < 1.0, check.__name__
        assert result in (None, []) or all(r.holds is None for r in result)


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_input_stays_under_100_mb(name):
    tracemalloc.start()
    try:
        for check in CHECKS:
            check(HOSTILE[name])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20


def test_random_text_never_raises():
    rng = random.Random(0)
    pieces = list("0123456789+-*/^()=.,%$ x{}[]") + ["\\frac", "\\sqrt", "\\cdot", "\\text{", " times ",
                                                      " of ", "<<", ">>", "**", "\\left(", "\\\\", "&="]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 60))) for _ in range(600)]
    texts += [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))).decode("latin-1") for _ in range(200)]
    for text in texts:
        started = time.perf_counter()
        reward = check_step(text)
        assert reward in (None, HOLDS, FALSE)
        assert time.perf_counter() - started < 1.0
