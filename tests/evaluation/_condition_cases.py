"""Condition cases as plain data: (property value, op, filter values) → does the condition hold.

Pure data with no imports, so that the same table can be replayed against the reference SDK's
engine when the expectations are revisited (every row was checked against 1.13.0). The property
is ``user_properties["p"]``; a row without ``"value"`` leaves it missing. Sources: docs/compatibility.md, 'Condition matching', 'Missing values', 'Operators', 'Semantic versions' and the worked examples the reference was checked with.
"""

OPERATORS = (
    "is", "is not", "contains", "does not contain",
    "less", "less or equal", "greater", "greater or equal",
    "version less", "version less or equal", "version greater", "version greater or equal",
    "set is", "set is not", "set contains", "set does not contain", "set contains any", "set does not contain any",
    "regex match", "regex does not match",
)

# docs/compatibility.md, 'Missing values': what a missing or falsy property gives, with N = "(none)" in the filter values.
NULL_IS_N = frozenset(("is", "contains", "less", "less or equal", "greater", "greater or equal",
                       "version less", "version less or equal", "version greater", "version greater or equal",
                       "set is", "set contains", "set contains any"))
NULL_IS_NOT_N = frozenset(("is not", "does not contain", "set does not contain", "set does not contain any"))
FALSY_VALUES = (0, 0.0, False, "", [], {})


def null_expectation(op, values):
    has_none = "(none)" in values
    if op in NULL_IS_N:
        return has_none
    if op in NULL_IS_NOT_N:
        return not has_none
    return False


def _case(ident, value, op, values, expected):
    return {"id": ident, "value": value, "op": op, "values": values, "expected": expected}


def _missing(ident, op, values, expected):
    return {"id": ident, "op": op, "values": values, "expected": expected}


CASES = [
    # --- is / is not (docs/compatibility.md, 'Operators') and string coercion (docs/compatibility.md, 'Condition matching')
    _case("E1 is any of", "team", "is", ["pro", "team"], True),
    _case("E2 zero is treated as null", 0, "is", ["0"], False),
    _case("E2b zero is (none)", 0, "is", ["(none)"], True),
    _case("False is null", False, "is", ["false"], False),
    _case("empty string is null", "", "is", [""], False),
    _case("E7 True is true", True, "is", ["true"], True),
    _case("mixed-case booleans fold", "tRuE", "is", ["TRUE"], True),
    _case("True is True", True, "is", ["True"], True),
    _case("yes is not a boolean word", "Yes", "is", ["true", "yes"], False),
    _case("True is not 1", True, "is", ["1"], False),
    _case("one boolean filter among others folds", "True", "is", ["x", "TRUE"], True),
    _case("boolean-looking property without a boolean filter is exact", "TRUE", "is", ["x", "True "], False),
    _case("boolean filter against a non-boolean property is exact", "Yes", "is", ["TRUE", "Yes"], True),
    _case("no numeric normalisation", "5", "is", ["5.0"], False),
    _case("int coerces with str", 5, "is", ["5"], True),
    _case("float 1.0 is not 1", 1.0, "is", ["1"], False),
    _case("float 1.0 is 1.0", 1.0, "is", ["1.0"], True),
    _case("float 1e20 prints as 1e+20", 1e20, "is", ["1e+20"], True),
    _case("is is case-sensitive", "Pro", "is", ["pro"], False),
    _case("nested list element is JSON with spaces", [[1, 2]], "is", ["[1, 2]"], True),
    _case("nested list element without spaces does not match", [[1, 2]], "is", ["[1,2]"], False),
    _case("dict is JSON with spaces", {"k": "v"}, "is", ['{"k": "v"}'], True),
    _case("dict JSON escapes non-ASCII", {"k": "\u00fc"}, "is", ['{"k": "\\u00fc"}'], True),
    _case("dict JSON escapes non-ASCII 2", {"k": "\u00fc"}, "is", ['{"k": "\u00fc"}'], False),
    _case("non-ASCII string", "\u00fc", "is", ["\u00fc"], True),
    _case("E3 is not is any-match on lists", ["a", "b"], "is not", ["a"], True),
    _case("is not on all-equal list", ["a", "a"], "is not", ["a"], False),
    _case("is not on JSON empty list", "[]", "is not", ["x"], False),
    _case("list of None is empty", [None], "is", ["(none)"], False),
    _case("is not scalar equal", "a", "is not", ["a"], False),
    _case("is not scalar different", "b", "is not", ["a"], True),
    _case("JSON-string list any-match", '["a","b"]', "is", ["b"], True),
    _case("JSON-string list is parsed, not compared whole", '["a"]', "is", ['["a"]'], False),
    _case("invalid JSON list is a scalar", "[not json", "is", ["[not json"], True),
    _case("JSON that is not a list is a scalar", '"[a]"', "is", ['"[a]"'], True),
    _case("list with None skips it", [None, "a"], "is", ["a"], True),
    _case("list element floats", [1.0, 2], "is", ["1.0"], True),
    _case("list element booleans fold", [True], "is", ["true"], True),
    _case("list element dicts", [{"k": 1}], "is", ['{"k": 1}'], True),
    # --- contains (docs/compatibility.md, 'Operators')
    _case("E12 contains is case-insensitive", "United States", "contains", ["STATES"], True),
    _case("no casefolding", "stra\u00dfe", "contains", ["SS"], False),
    _case("empty needle matches", "abc", "contains", [""], True),
    _case("any needle", "abc", "contains", ["x", "B"], True),
    _case("dict contains its key text", {"k": "v"}, "contains", ["k"], True),
    _case("does not contain present", "abc", "does not contain", ["B"], False),
    _case("does not contain absent", "abc", "does not contain", ["x"], True),
    _case("does not contain any-match on lists", ["ab", "cd"], "does not contain", ["a"], True),
    _case("contains on a number", 12345, "contains", ["234"], True),
    # --- numeric comparisons (docs/compatibility.md, 'Operators')
    _case("E6 numeric less", "9", "less", ["10"], True),
    _case("E6b string fallback", "9a", "less", ["10"], False),
    _case("string fallback against all raw filters", "abc", "greater", ["x", "5"], True),
    _case("numeric against parsed filters only", "6", "greater", ["x", "5"], True),
    _case("True compares as a string", True, "greater", ["0"], True),
    _case("float() strips whitespace", " 5 ", "less or equal", ["5"], True),
    _case("exponent", "1e3", "greater", ["999"], True),
    _case("underscores", "1_000", "greater or equal", ["1000"], True),
    _case("hex is not a number", "0x10", "greater", ["9"], False),
    _case("thousands separator is not a number", "1,000", "less", ["2"], True),
    _case("full-width digits", "\uff11\uff10", "greater", ["9"], True),
    _case("nan property compares false", "nan", "less", ["1"], False),
    _case("nan property compares false 2", "nan", "greater or equal", ["1"], False),
    _case("inf", "inf", "greater", ["1e308"], True),
    _case("-Infinity", "-Infinity", "less", ["0"], True),
    _case("nan filter compares false", 10, "less", ["nan"], False),
    _case("no filter parses: string order", "5", "less", ["abc"], True),
    _case("float equality", 2.5, "less or equal", ["2.5"], True),
    _case("greater on list is any-match", ["1", "20"], "greater", ["10"], True),
    _case("numbers as int", 10, "greater or equal", ["10"], True),
    _case("leading plus", "+5", "greater", ["4"], True),
    _case("bare dot", ".5", "less", ["1"], True),
    # --- versions (docs/compatibility.md, 'Operators', 'Semantic versions')
    _case("E4 version greater", "1.10.0", "version greater", ["1.9.0"], True),
    _case("E4b trailing hyphen is a pre-release", "1.2.3-", "version greater or equal", ["1.2.3"], False),
    _case("trailing hyphen is less", "1.2.3-", "version less", ["1.2.3"], True),
    _case("not a version: string order", "10", "version less", ["2"], True),
    _case("filter not a version: string order", "1.0.0", "version less", ["abc"], True),
    _case("four parts: string order", "1.2.3.4", "version greater", ["1.2.3"], True),
    _case("pre-releases compare as strings", "1.0.0-alpha.10", "version less", ["1.0.0-alpha.2"], True),
    _case("pre-releases compare by code point", "1.0.0-Beta", "version less", ["1.0.0-alpha"], True),
    _case("pre-release string order 2", "20.9.4-a1.23", "version less", ["20.9.4-a1.5"], True),
    _case("missing patch is zero", "1.2", "version less or equal", ["1.2.0"], True),
    _case("missing patch is zero 2", "1.2", "version greater or equal", ["1.2.0"], True),
    _case("leading zeros", "06.007.0008", "version greater or equal", ["6.7.8"], True),
    _case("final newline parses", "1.2.3\n", "version less or equal", ["1.2.3"], True),
    _case("final newline parses 2", "1.2.3\n", "version greater or equal", ["1.2.3"], True),
    _case("pre-release needs a patch", "1.2-beta", "version greater", ["1.2.0"], False),
    _case("v prefix: string order", "v1.2.3", "version greater", ["1.2.3"], True),
    _case("pre-release below release", "1.2.3-beta", "version less", ["1.2.3"], True),
    _case("release above pre-release", "1.2.3", "version greater", ["1.2.3-beta"], True),
    _case("equal versions", "1.2.3", "version less or equal", ["1.2.3"], True),
    _case("equal versions strict", "1.2.3", "version less", ["1.2.3"], False),
    _case("Unicode digits", "\u0661.\u0662.\u0663", "version greater or equal", ["1.2.3"], True),
    _case("version on a list is any-match", ["1.0.0", "3.0.0"], "version greater", ["2.0.0"], True),
    # --- regex (docs/compatibility.md, 'Operators')
    _case("E11 regex match", "a@example.com", "regex match", ["@example\\.com$"], True),
    _case("inline flags", "A@EXAMPLE.COM", "regex match", ["(?i)example"], True),
    _case("unanchored", "xabc", "regex match", ["abc"], True),
    _case("anchored miss", "abc", "regex match", ["^b"], False),
    _case("regex does not match", "abc", "regex does not match", ["^b"], True),
    _case("regex does not match hit", "abc", "regex does not match", ["b"], False),
    _case("regex on list any-match", ["x", "ab"], "regex match", ["^a"], True),
    _case("regex on a number", 123, "regex match", ["^\\d+$"], True),
    _case("regex any pattern", "abc", "regex match", ["^z", "c$"], True),
    # --- set operators (docs/compatibility.md, 'Operators')
    _case("E5 set op on scalar is false", "a", "set contains", ["a"], False),
    _case("E5b set op on JSON-string list", '["a","b"]', "set contains", ["a"], True),
    _case("negated set op on scalar is false", "abc", "set does not contain", ["a"], False),
    _case("negated set op on [None] is false", [None], "set does not contain", ["a"], False),
    _case("set is not on JSON empty list is false", "[]", "set is not", ["a"], False),
    _case("set does not contain any on scalar is false", "abc", "set does not contain any", ["x"], False),
    _case("set contains counts duplicates", ["a"], "set contains", ["a", "a"], False),
    _case("set contains duplicates with enough items", ["a", "x"], "set contains", ["a", "a"], True),
    _case("set contains folds booleans", [True], "set contains", ["true"], True),
    _case("set contains nothing", ["a"], "set contains", [], True),
    _case("set is does not fold booleans", [True], "set is", ["true"], False),
    _case("set is ignores duplicates", ["a", "b", "a"], "set is", ["b", "a"], True),
    _case("set is not", ["a", "b"], "set is not", ["a"], True),
    _case("set is not equal", ["a", "b"], "set is not", ["b", "a"], False),
    _case("set contains any", ["a", "b"], "set contains any", ["x", "b"], True),
    _case("set contains any of nothing", ["a"], "set contains any", [], False),
    _case("set does not contain any of nothing", ["a"], "set does not contain any", [], True),
    _case("set does not contain any hit", ["a"], "set does not contain any", ["a"], False),
    _case("set contains any folds booleans", ["TRUE", "x"], "set contains any", ["True"], True),
    _case("set contains numbers as strings", [1, 2], "set contains", ["1"], True),
    _case("set contains float prints 1.0", [1.0], "set contains", ["1"], False),
    _case("set is on JSON list with numbers", '[1, "a"]', "set is", ["1", "a"], True),
    _case("invalid JSON list", "[1,2", "set contains", ["1"], False),
    _case("JSON list of lists", "[[1,2]]", "set contains", ["[1, 2]"], True),
    _case("JSON object is not a list", '{"a": 1}', "set contains any", ["a"], False),
    _case("set does not contain", ["a", "b"], "set does not contain", ["c"], True),
    _case("set does not contain hit", ["a", "b"], "set does not contain", ["a"], False),
    _case("set is case-sensitive", ["A"], "set is", ["a"], False),
    # --- unknown operator
    _case("unknown operator on a value", "a", "glob match", ["a"], False),
    _missing("unknown operator on null", "glob match", ["(none)"], False),
    # --- missing property
    _missing("missing is (none)", "is", ["(none)"], True),
    _missing("missing is not x", "is not", ["x"], True),
    _missing("missing is x", "is", ["x"], False),
]
