"""The word lists of the intent detectors: data only, read-only, built at import.

Each entry is a common way of wording a request or a question in general, not a patch for one labelled
pair. The rephrase detector reads the normalisation tables (stop words, phrasings, synonyms, contrasts,
numbers, contractions); the follow-up detector reads the cue lists at the end.
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    """The whitespace-separated words of a lexicon block."""
    return frozenset(text.split())


# ------------------------------------------------------------------------------------------------------------
# Normalisation and rephrase
# ------------------------------------------------------------------------------------------------------------

# Function words and politeness; also "1", as "a cup" and "1 cup" ask the same.
STOP_WORDS = _words(
    """
    a an the i me my mine myself we us our ours you your yours he him his she her it its they them their
    this that these those is am are was were be been being do does did doing done have has had having can
    could would should will shall may might must to of in on at for with from by about as into onto and or
    but if so then than there here what how some any all just also very really please pls plz hi hello hey
    ok okay one someone anyone something anything now still even again too more most much many such own same
    other else each every both actually basically exactly possible kind let lets thing things stuff way ways
    which whose whom able 1
    """
)

# Question words that change what is asked ("when did it fall" is not "why did it fall").
QUESTION_WORDS = frozenset({"why", "when", "where", "who"})
# ...which inside a sentence are usually conjunctions or relative pronouns.
CONJUNCTIONS = frozenset({"when", "where", "who"})

LOW_WEIGHT_WORDS = _words(
    """
    use using used get make do go give tell show help need want like know best good great simple simply easy
    quick example examples tip tips work works working method methods approach question questions explain
    explanation understand write create find try correct right properly proper new thing idea ideas recipe
    process common keyword option options something someone typical typically normally usually general
    generally suggest recommend step steps guide tutorial code script program duration time degree degrees
    calculate compute say says said throw throws up down out off over through via across around back away
    going gonna wanna put state fix solve error issue problem top nice ideal optimal language cook advice
    suggestion term terms rewrite rephrase reword formula
    """
)

# Multi-word phrasings mapped to one canonical word, or to nothing ("": framing that asks nothing itself).
PHRASES: dict[str, str] = {
    # question framing
    "what is the best way to": "",
    "what is the easiest way to": "",
    "what is the simplest way to": "",
    "what is a good way to": "",
    "what is the way to": "",
    "what are the steps to": "",
    "is there any way to": "",
    "is there a way to": "",
    "is it possible to": "",
    "the best way to": "",
    "the easiest way to": "",
    "best way to": "",
    "easiest way to": "",
    "any way to": "",
    "steps to": "",
    "how to": "",
    "how do i": "",
    "how can i": "",
    "how would i": "",
    "how should i": "",
    "how do you": "",
    "can you": "",
    "could you": "",
    "would you": "",
    "i want to": "",
    "i need to": "",
    "i would like to": "",
    "i am trying to": "",
    "trying to": "",
    "help me": "",
    "tell me": "",
    "show me": "",
    "tips to": "",
    "tips for": "",
    "or not": "",
    "explain to me": "explain",
    # what kind of answer is wanted
    "what caused": "why",
    "what causes": "why",
    "what is causing": "why",
    "what makes": "why",
    "what made": "why",
    "how come": "why",
    "reasons for": "why",
    "reason for": "why",
    "what year": "when",
    "which year": "when",
    "what date": "when",
    "how many": "count",
    "number of": "count",
    "how long": "duration",
    "how much time": "duration",
    "how many minutes": "duration",
    "how many hours": "duration",
    "how many days": "duration",
    "how many weeks": "duration",
    "how early": "when",
    "fall asleep": "sleep",
    "get to sleep": "sleep",
    "go to sleep": "sleep",
    "rename": "change name",
    "log out": "logout",
    "sign out": "logout",
    "customer service": "support",
    "customer support": "support",
    "help desk": "support",
    "get in touch with": "contact",
    "reach out to": "contact",
    "add up": "sum",
    "pros and cons": "advantage disadvantage",
    "how many people live in": "population",
    "right now": "current",
    "at the moment": "current",
    "these days": "current",
    "science fiction": "scifi",
    "sci fi": "scifi",
    "world war ii": "ww2",
    "world war 2": "ww2",
    "world war two": "ww2",
    "wwii": "ww2",
    "world war i": "ww1",
    "world war 1": "ww1",
    "world war one": "ww1",
    "wwi": "ww1",
    "how tall": "height",
    "how high": "height",
    "how old": "age",
    "how far": "distance",
    "how big": "size",
    "how heavy": "weight",
    "time of year": "season",
    "time of the year": "season",
    "how do you say": "translate",
    "how to say": "translate",
    "who is the author of": "who author",
    "in simple terms": "simple",
    "in simpler terms": "simple",
    "like i am five": "simple",
    "eli5": "simple",
    # verbs in several words
    "get rid of": "remove",
    "figure out": "find",
    "find out": "find",
    "look up": "find",
    "come up with": "create",
    "put together": "create",
    "speed up": "fast",
    "log in": "login",
    "sign in": "login",
    "log on": "login",
    "sign up": "signup",
    "set up": "setup",
    "turn on": "enable",
    "switch on": "enable",
    "turn off": "disable",
    "switch off": "disable",
    "check out": "checkout",
    "opt out of": "unsubscribe",
    "opt out": "unsubscribe",
    "stop receiving": "unsubscribe",
    "say no to": "decline",
    "turn down": "decline",
    "goes well with": "pair",
    "go well with": "pair",
    "goes with": "pair",
    "make it to": "attend",
    "does not work": "not",
    "not working": "not",
    "without losing": "keep",
    "not losing": "keep",
    # nouns and modifiers in several words
    "e mail": "email",
    "new york city": "nyc",
    "new york": "nyc",
    "los angeles": "la",
    "united states": "usa",
    "united kingdom": "uk",
    "date and time": "datetime",
    "date time": "datetime",
    "data frame": "dataframe",
    "regular expression": "regex",
    "big o": "complexity",
    "place to stay": "hotel",
    "places to stay": "hotel",
    "most recent": "last",
    "entry level": "junior",
    "instead of": "substitute",
    "in place of": "substitute",
    "alternative to": "substitute",
    "replacement for": "substitute",
    "money back": "refund",
    "double charged": "charged twice",
    "two times": "twice",
    "2 times": "twice",
    "free of charge": "free",
    "without paying a fee": "free",
    "without a fee": "free",
    "with no fee": "free",
    "no fee": "free",
    "right after": "immediately",
    "as soon as": "immediately",
    "straight after": "immediately",
    "smallest to largest": "ascending",
    "lowest to highest": "ascending",
    "low to high": "ascending",
    "largest to smallest": "descending",
    "highest to lowest": "descending",
    "high to low": "descending",
    "dedupe": "remove duplicate",
    "sqrt": "square root",
}

# One group a line, canonical word first. Inflections are covered by stemming, irregular forms listed.
SYNONYM_GROUPS = tuple(
    """
fix solve resolve repair troubleshoot debug
error issue problem bug mistake exception trouble glitch
remove delete erase eliminate clear strip kill clean
add insert append include
create make build generate construct built construction made produce
write draft compose implement
author wrote written writer
show display print output view
get obtain retrieve fetch find got found locate search identify detect receive received
under below
big large huge bigger larger massive
small little tiny smaller
fast quick quickly rapid faster quicker speed speedy efficient efficiently swift
slow sluggish laggy slower slowly
easy simple simply basic straightforward easiest simplest
hard difficult tough challenging
setup install configure config configuration
run execute ran
use utilize utilise employ apply
save persist
copy duplicate clone
move transfer migrate
split divide separate
connect link attach
forget forgot forgotten
break broke
buy purchase bought
sell sold
send sent
pay paid
lose lost loss
choose chose chosen pick select
start begin commence
finish complete
change modify alter edit update adjust tweak convert conversion transform turn
combine merge join concatenate concat
handle catch manage deal cope
reverse invert
undo revert rollback
stop prevent avoid exit quit halt block
allow enable permit
reduce lower decrease cut minimize minimise shrink
improve enhance boost increase raise better
cancel terminate unsubscribe
decline refuse reject
ask request invitation invite inquire enquire
answer reply respond response
attend come
bring take carry
keep preserve maintain retain
check test verify validate proofread confirm ensure see
learn study master
explain describe
meaning definition define mean average avg
difference differ vs versus compare comparison distinction
recommend suggest advise recommendation suggestion advice tip tips
sort order arrange organize organise
calculate compute determine
count tally
sum total
benefit advantage pro
drawback disadvantage downside con
symptom sign
treat cure remedy treatment
fridge refrigerator
luggage baggage suitcase
city town
computer pc
ship shipping deliver delivery
damaged defective faulty
longer lengthen expand extend
bio biography
presentation slides deck
speech toast
length size len
pair pairing match
center centre middle
color colour
cheap inexpensive affordable cheapest cheaper budget
expensive pricey costly
price cost fee charge rate
discount promo coupon voucher
money cash funds
salary wage compensation
website site webpage
app application software tool program
picture image photo pic
movie film
song track tune
example sample instance
visit travel trip journey vacation holiday tourist tourism
arrive reach
message email mail
client customer
late delayed delay overdue
mom mother mum
dad father
book novel
missing nan null
flight fly airfare airplane aeroplane
hotel accommodation lodging
house home
job position role employment
boss manager supervisor
coworker colleague
friend buddy pal
doctor physician
kid child children kids
phone smartphone mobile cellphone
car auto vehicle
title headline heading
specific exact particular certain
important key main essential crucial
common typical usual normal
popular famous
wrong incorrect
safe secure
healthy nutritious
polite courteous respectful politely
rude impolite
happy glad
sad unhappy upset
angry annoyed furious
immediately instantly
password pw pwd passcode
reset recover
login signin logon
signup register registration
shorten shorter concise condense brief briefly
summary summarize summarise recap synopsis overview
resume cv
package parcel library lib module
repo repository
function func fn
argument arg param parameter
variable var
database db
directory dir folder
file document doc
string str
dictionary dict hashmap
number numeric digit integer int
item element
property field attribute prop
read load
iterate loop
substitute replacement alternative replace swap
itinerary plan schedule
need require requirement
current today present
chance probability odds likelihood
toss flip
derivative differentiate derive
why reason cause
fall collapse
night evening
dinner supper
dessert sweets
death die died dead
invent inventor invented
highest largest biggest maximum max greatest tallest
lowest smallest minimum least
second 2nd
first 1st
third 3rd
last latest newest
usa america american americans
uk britain
javascript js
python py
typescript ts
postgres postgresql psql
kubernetes k8s
node nodejs node.js
nullpointerexception npe
regex regexp
vegetarian veggie meatless
percent % pct percentage
minute min mins
hour hr hrs
kilometer km kilometre
mile mi
pound lb lbs
kilogram kg
gram grams g
tablespoon tbsp
teaspoon tsp
fahrenheit f
celsius c centigrade
temperature temp
duration time
""".strip().splitlines()
)

# Words naming alternatives of one kind: two prompts that differ by two of them ask different things.
CONTRAST_GROUPS = tuple(
    """
python javascript java typescript c c++ c# go golang rust ruby php swift kotlin scala bash powershell perl
sql r
postgres mysql sqlite mongodb redis oracle
pandas numpy excel csv json xml yaml
react vue angular svelte django flask rails spring
windows mac macos linux ubuntu android ios
list array string number float dictionary set tuple dataframe
who when where why
ascending descending
increase decrease
add remove insert
highest lowest
first second third last
before after
upload download
encode decode
encrypt decrypt
read write
import export
open close
start stop
enable disable
horizontal vertical
left right
up down
buy sell
send receive
push pull
hot cold warm
summer winter spring autumn
morning night afternoon
soft hard runny
formal casual informal
active passive
past present future
senior junior
simple compound
local remote
public private readonly optional required
linear quadratic cubic
square cube
derivative integral
sin cos tan
key value
get post put patch
pause cancel upgrade downgrade refund return exchange
monday tuesday wednesday thursday friday saturday sunday
january february march april may june july august september october november december
""".strip().splitlines()
)

NUMBER_WORDS = {
    "zero": "0",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "thirteen": "13",
    "fourteen": "14",
    "fifteen": "15",
    "sixteen": "16",
    "seventeen": "17",
    "eighteen": "18",
    "nineteen": "19",
    "twenty": "20",
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "sixty": "60",
    "seventy": "70",
    "eighty": "80",
    "ninety": "90",
    "hundred": "100",
    "thousand": "1000",
}

CONTRACTIONS = {
    "re": ("are",),
    "m": ("am",),
    "ll": ("will",),
    "ve": ("have",),
    "d": ("would",),
    "s": ("is",),
}
NEGATED_CONTRACTIONS = {"can't": ("can", "not"), "won't": ("will", "not"), "shan't": ("shall", "not")}

# The same contractions typed without an apostrophe.
BARE_CONTRACTIONS = {
    "cant": "can not",
    "cannot": "can not",
    "wont": "will not",
    "dont": "do not",
    "doesnt": "does not",
    "didnt": "did not",
    "isnt": "is not",
    "arent": "are not",
    "wasnt": "was not",
    "shouldnt": "should not",
    "wouldnt": "would not",
    "couldnt": "could not",
    "whats": "what is",
    "hows": "how is",
    "im": "i am",
    "ive": "i have",
}

NEGATIONS = _words("not no without never nor unable fail fails failed broken")
DIRECTION_WORDS = frozenset({"to", "into", "->"})
# ------------------------------------------------------------------------------------------------------------
# Clarifying follow-up
# ------------------------------------------------------------------------------------------------------------

ACKNOWLEDGEMENTS = _words(
    """
    thanks thank thx ty tysm cheers ok okay k kk cool great perfect nice awesome amazing excellent wonderful
    brilliant good fine alright sure yes yeah yep yup got gotcha understood noted love lovely neat sweet wow
    interesting done worked works makes sense helpful appreciate appreciated
    """
)
ACKNOWLEDGEMENT_TAIL = _words("you it that so much very")  # "thank you so much", "got it"

INTERROGATIVES = _words(
    """
    what why how which where when who whom whose is are was were does do did can could would should will shall
    so but and wait really huh hmm sorry
    """
)

# First words of a new task; a clarifying question does not open with them.
TASK_VERBS = _words(
    """
    write create generate make give translate summarize summarise draft compose plan list suggest recommend
    convert calculate compute solve implement build design find book tell rewrite fix add remove delete send
    produce prepare compare sort reverse count help code refactor optimize optimise debug review proofread
    edit shorten expand improve change update now next also
    """
)

# Words and phrasings that ask about something already said ("what do you mean", "which one", "what if").
CLARIFY_WORDS = _words(
    """
    mean means meant meaning explain explanation clarify clarification elaborate example examples instance
    exactly confused confusing eli5
    """
)
CLARIFY_PHRASES = frozenset(
    tuple(phrase.split())
    for phrase in """
    what if|what about|which one|which ones|which is|which of|how so|like what|why not|how come|stand for
    such as|more detail|in detail|walk me through|go over|tell me more|say more|more about|of what|expand on
    break it down|break that down|break this down|difference between|simpler terms|not sure what
    do not understand|do not get|lost me|go deeper
    """.replace("\n", "|").split("|")
    if phrase.strip()
)

# Words that point back at the answer: "that", "the second step", "you mentioned".
ANAPHORA = _words(
    """
    it that this those these they them their there above previous earlier mentioned said wrote suggested
    first second third fourth fifth last step steps option options part point one ones
    """
)

HOW_TO_STARTS = frozenset(
    {("how", "to"), ("how", "do"), ("how", "can"), ("how", "would"), ("how", "should"), ("how", "could")}
)
HOW_TO_EXCEPTIONS = frozenset({"know", "tell"})  # "how do I know if it's done?" asks about the answer
