/*
 * treedicts: a statement's parse tree as Python dicts, built straight from libpg_query's C nodes.
 *
 * The result equals `orjson.loads(pglast.parser.parse_sql_json(sql))` (tests/policy/test_treedicts.py proves it over
 * the corpora and the fuzzer), without writing the tree as JSON text and reading it back: the whole-tree validator's
 * input at about a third of the cost. The field walk is libpg_query's own generated code (pg_query_outfuncs_defs.c,
 * the one its JSON and protobuf writers share), compiled here with macros that build dicts; its sources come from the
 * pglast sdist of the installed version (setup.py), and the parser itself is pglast's: this module calls the functions
 * of pglast's loaded extension through pointers looked up in it alone (never through the global symbol scope, where
 * PostgreSQL's internals would shadow libpq's), so both run the same grammar on the same structures.
 *
 * Every rule of libpg_query's JSON writer is kept: integers, characters and booleans only when set, strings only
 * when non-empty, enums always, lists and node pointers only when present, a NULL Node as null, a NULL list item as {},
 * an A_Const's location always. Anything the JSON form could not carry (a NUL or control character in a one-character
 * field, text that is not UTF-8, nesting deeper than orjson reads) is an error here as well.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "pg_query.h"
#include "pg_query_internal.h"

#include "nodes/parsenodes.h"
#include "nodes/plannodes.h"
#include "nodes/value.h"

#include "pglast_parser.h"

#undef snprintf /* PostgreSQL's port.h maps it to its own, which lives in pglast's extension */

/* orjson's limit: a tree nested deeper than this is refused (the validator denies it as too complex). */
#define MAX_NESTING 1024

typedef struct {
	int depth;
	int failed; /* a Python error is set */
	int too_deep;
} Walk;

/* This thread's walk in progress. Building a dict can start the collector, whose finalizers run any Python: another
   thread's parse (the GIL released) or one of their own; so the pointer is per thread, and each parse restores the
   one it found. */
PER_THREAD Walk *walk;

#define OUT_TYPE(typename, typename_c) PyObject *

static void _outNode(PyObject *out, const void *obj);
static PyObject *node_object(const void *obj);

/* One interned key per call site, made on first use (by whichever walk gets there first: the same string). */
#define KEY(name) \
	({ \
		static PyObject *key_; \
		if (key_ == NULL) { \
			PyObject *made_ = PyUnicode_InternFromString(name); \
			if (key_ == NULL) \
				key_ = made_; \
			else \
				Py_XDECREF(made_); \
		} \
		key_; \
	})

static void set(PyObject *out, PyObject *key, PyObject *value)
{
	if (value == NULL || key == NULL) {
		walk->failed = 1;
		Py_XDECREF(value);
		return;
	}
	if (PyDict_SetItem(out, key, value) < 0)
		walk->failed = 1;
	Py_DECREF(value);
}

static PyObject *utf8_text(const char *value)
{
	return PyUnicode_DecodeUTF8(value, (Py_ssize_t) strlen(value), NULL);
}

static PyObject *character(char value)
{
	if ((unsigned char) value < ' ') { /* written raw into JSON text, which no reader accepts */
		PyErr_SetString(PyExc_ValueError, "a control character in a character field");
		return NULL;
	}
	return PyUnicode_DecodeUTF8(&value, 1, NULL);
}

static PyObject *six_decimals(double value)
{
	char written[512];
	snprintf(written, sizeof written, "%f", value);
	return PyFloat_FromDouble(PyOS_string_to_double(written, NULL, NULL));
}

static PyObject *new_dict(void)
{
	if (++walk->depth > MAX_NESTING || !stack_left()) {
		walk->too_deep = 1;
		walk->failed = 1;
		walk->depth--;
		return NULL;
	}
	PyObject *dict = PyDict_New();
	if (dict == NULL)
		walk->failed = 1;
	return dict;
}

#define END_DICT() (walk->depth--)

#define WRITE_INT_FIELD(msgtype, outname, outname_json, fldname) \
	if (node->fldname != 0) \
		set(out, KEY(CppAsString(outname_json)), PyLong_FromLong(node->fldname));

#define WRITE_UINT_FIELD(msgtype, outname, outname_json, fldname) \
	if (node->fldname != 0) \
		set(out, KEY(CppAsString(outname_json)), PyLong_FromUnsignedLong(node->fldname));

#define WRITE_UINT64_FIELD(msgtype, outname, outname_json, fldname) \
	if (node->fldname != 0) \
		set(out, KEY(CppAsString(outname_json)), PyLong_FromUnsignedLongLong(node->fldname));

#define WRITE_LONG_FIELD(msgtype, outname, outname_json, fldname) \
	if (node->fldname != 0) \
		set(out, KEY(CppAsString(outname_json)), PyLong_FromLong(node->fldname));

#define WRITE_CHAR_FIELD(msgtype, outname, outname_json, fldname) \
	if (node->fldname != 0) \
		set(out, KEY(CppAsString(outname_json)), character(node->fldname));

#define WRITE_ENUM_FIELD(msgtype, enumtype, outname, outname_json, fldname) \
	set(out, KEY(CppAsString(outname_json)), utf8_text(_enumToString##enumtype(node->fldname)));

#define WRITE_FLOAT_FIELD(msgtype, outname, outname_json, fldname) \
	set(out, KEY(CppAsString(outname_json)), six_decimals(node->fldname));

#define WRITE_BOOL_FIELD(msgtype, outname, outname_json, fldname) \
	if (node->fldname) { \
		Py_INCREF(Py_True); \
		set(out, KEY(CppAsString(outname_json)), Py_True); \
	}

#define WRITE_STRING_FIELD(msgtype, outname, outname_json, fldname) \
	if (node->fldname != NULL && node->fldname[0] != '\0') \
		set(out, KEY(CppAsString(outname_json)), utf8_text(node->fldname));

#define WRITE_LIST_FIELD(msgtype, outname, outname_json, fldname) \
	if (node->fldname != NULL) \
		set(out, KEY(CppAsString(outname_json)), node_list(node->fldname));

#define WRITE_NODE_FIELD(msgtype, outname, outname_json, fldname) \
	set(out, KEY(CppAsString(outname_json)), node_object(&node->fldname));

#define WRITE_NODE_PTR_FIELD(msgtype, outname, outname_json, fldname) \
	if (node->fldname != NULL) \
		set(out, KEY(CppAsString(outname_json)), node_object(node->fldname));

#define WRITE_SPECIFIC_NODE_FIELD(msgtype, typename, typename_underscore, outname, outname_json, fldname) \
	{ \
		PyObject *fields = new_dict(); \
		if (fields != NULL) { \
			_out##typename(fields, &node->fldname); \
			END_DICT(); \
		} \
		set(out, KEY(CppAsString(outname_json)), fields); \
	}

#define WRITE_SPECIFIC_NODE_PTR_FIELD(msgtype, typename, typename_underscore, outname, outname_json, fldname) \
	if (node->fldname != NULL) { \
		PyObject *fields = new_dict(); \
		if (fields != NULL) { \
			_out##typename(fields, node->fldname); \
			END_DICT(); \
		} \
		set(out, KEY(CppAsString(outname_json)), fields); \
	}

#define WRITE_BITMAPSET_FIELD(msgtype, outname, outname_json, fldname) \
	if (!bms_is_empty(node->fldname)) { \
		PyObject *members = PyList_New(0); \
		int member = 0; \
		while (members != NULL && (member = next_member(node->fldname, member)) >= 0) { \
			PyObject *number = PyLong_FromLong(member); \
			if (number == NULL || PyList_Append(members, number) < 0) \
				walk->failed = 1; \
			Py_XDECREF(number); \
		} \
		set(out, KEY(CppAsString(outname_json)), members); \
	}

/* A list of Nodes; a NULL item is {} as in the JSON writer. */
static PyObject *node_list(const List *list)
{
	if (++walk->depth > MAX_NESTING || !stack_left()) {
		walk->too_deep = 1;
		walk->failed = 1;
		walk->depth--;
		return NULL;
	}
	PyObject *items = PyList_New(list_length(list));
	if (items == NULL) {
		walk->failed = 1;
		walk->depth--;
		return NULL;
	}
	const ListCell *cell;
	Py_ssize_t index = 0;
	foreach(cell, list) {
		PyObject *item;
		if (lfirst(cell) == NULL) { /* {} as the JSON writer writes it, one level deeper */
			item = new_dict();
			if (item != NULL)
				END_DICT();
		} else
			item = node_object(lfirst(cell));
		if (item == NULL) { /* PyList_New filled the list with NULLs: a partly filled list is freed safely */
			walk->failed = 1;
			break;
		}
		PyList_SET_ITEM(items, index++, item);
	}
	walk->depth--;
	if (walk->failed) {
		Py_DECREF(items);
		return NULL;
	}
	return items;
}

static PyObject *int_list(const List *list, int oids)
{
	PyObject *items = PyList_New(list_length(list));
	if (items == NULL)
		return NULL;
	const ListCell *cell;
	Py_ssize_t index = 0;
	foreach(cell, list) {
		PyObject *number = oids ? PyLong_FromUnsignedLong(lfirst_oid(cell)) : PyLong_FromLong(lfirst_int(cell));
		if (number == NULL) {
			Py_DECREF(items);
			return NULL;
		}
		PyList_SET_ITEM(items, index++, number);
	}
	return items;
}

static void _outList(PyObject *out, const List *node)
{
	set(out, KEY("items"), node_list(node));
}

static void _outIntList(PyObject *out, const List *node)
{
	set(out, KEY("items"), int_list(node, 0));
}

static void _outOidList(PyObject *out, const List *node)
{
	set(out, KEY("items"), int_list(node, 1));
}

static void _outInteger(PyObject *out, const Integer *node)
{
	if (node->ival != 0)
		set(out, KEY("ival"), PyLong_FromLong(node->ival));
}

static void _outBoolean(PyObject *out, const Boolean *node)
{
	set(out, KEY("boolval"), PyBool_FromLong(node->boolval));
}

/* _outToken: a NULL string is null */
static PyObject *token(const char *value)
{
	if (value == NULL)
		Py_RETURN_NONE;
	return utf8_text(value);
}

static void _outFloat(PyObject *out, const Float *node)
{
	set(out, KEY("fval"), token(node->fval));
}

static void _outString(PyObject *out, const String *node)
{
	set(out, KEY("sval"), token(node->sval));
}

static void _outBitString(PyObject *out, const BitString *node)
{
	set(out, KEY("bsval"), token(node->bsval));
}

static void _outAConst(PyObject *out, const A_Const *node)
{
	if (node->isnull) {
		Py_INCREF(Py_True);
		set(out, KEY("isnull"), Py_True);
	} else {
		PyObject *value = new_dict();
		PyObject *key = NULL;
		if (value != NULL) {
			switch (node->val.node.type) {
			case T_Integer:
				key = KEY("ival");
				_outInteger(value, &node->val.ival);
				break;
			case T_Float:
				key = KEY("fval");
				_outFloat(value, &node->val.fval);
				break;
			case T_Boolean:
				key = KEY("boolval");
				if (node->val.boolval.boolval) {
					Py_INCREF(Py_True);
					set(value, KEY("boolval"), Py_True);
				}
				break;
			case T_String:
				key = KEY("sval");
				_outString(value, &node->val.sval);
				break;
			case T_BitString:
				key = KEY("bsval");
				_outBitString(value, &node->val.bsval);
				break;
			default:
				PyErr_SetString(PyExc_ValueError, "an A_Const of an unknown kind");
				walk->failed = 1;
			}
			END_DICT();
		}
		if (key != NULL)
			set(out, key, value);
		else
			Py_XDECREF(value);
	}
	set(out, KEY("location"), PyLong_FromLong(node->location));
}

#include "pg_query_enum_defs.c"
#include "pg_query_outfuncs_defs.c"

#define OUT_NODE(typename, typename_c, typename_underscore, typename_underscore_upcase, typename_cast, fldname) \
	{ \
		PyObject *fields = new_dict(); \
		if (fields != NULL) { \
			_out##typename_c(fields, (const typename_cast *) obj); \
			END_DICT(); \
		} \
		set(out, KEY(CppAsString(typename)), fields); \
	}

static void _outNode(PyObject *out, const void *obj)
{
	switch (nodeTag(obj)) {
#include "pg_query_outfuncs_conds.c"
	default: /* the JSON writer writes {} for a node type it does not know */
		break;
	}
}

/* A Node: {"Type": {fields}}, or None for NULL. */
static PyObject *node_object(const void *obj)
{
	if (obj == NULL)
		Py_RETURN_NONE;
	PyObject *out = new_dict();
	if (out == NULL)
		return NULL;
	_outNode(out, obj);
	END_DICT();
	if (walk->failed) {
		Py_DECREF(out);
		return NULL;
	}
	return out;
}

static PyObject *statements(const List *tree)
{
	PyObject *result = new_dict();
	if (result == NULL)
		return NULL;
	set(result, KEY("version"), PyLong_FromLong(PG_VERSION_NUM));
	PyObject *items = PyList_New(0);
	if (items != NULL && ++walk->depth > MAX_NESTING) {
		walk->too_deep = 1;
		walk->failed = 1;
	}
	const ListCell *cell;
	if (items != NULL && !walk->failed) {
		foreach(cell, tree) {
			PyObject *statement = new_dict();
			if (statement == NULL)
				break;
			_outRawStmt(statement, lfirst(cell));
			END_DICT();
			if (PyList_Append(items, statement) < 0)
				walk->failed = 1;
			Py_DECREF(statement);
			if (walk->failed)
				break;
		}
		walk->depth--;
	}
	set(result, KEY("stmts"), items);
	END_DICT();
	if (walk->failed) {
		Py_DECREF(result);
		return NULL;
	}
	return result;
}

static PyObject *read_statements(const List *tree)
{
	Walk state = {0, 0, 0};
	Walk *outer = walk;
	walk = &state;
	/* no collection, so no finalizer, amid the walk: nothing else runs inside libpg_query's memory context (and if
	   one did, the thread-local walk would keep this one intact) */
	int collecting = PyGC_Disable();
	PyObject *result = statements(tree);
	if (collecting)
		PyGC_Enable();
	walk = outer;
	if (result == NULL && state.too_deep) {
		PyErr_Clear();
		PyErr_SetString(PyExc_RecursionError, "the parse tree is nested too deeply");
	} else if (result == NULL && !PyErr_Occurred())
		PyErr_SetString(PyExc_ValueError, "the parse tree could not be read");
	return result;
}

static PyObject *parse(PyObject *module, PyObject *sql)
{
	return parse_then(sql, read_statements);
}

static PyMethodDef methods[] = {
	{"parse", parse, METH_O,
	 "parse(sql) -> dict: the parse tree, equal to orjson.loads(pglast.parser.parse_sql_json(sql)).\n"
	 "Raises pglast's ParseError for bad SQL and RecursionError for a tree nested too deeply."},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {PyModuleDef_HEAD_INIT, "treedicts", NULL, -1, methods};

PyMODINIT_FUNC PyInit_treedicts(void)
{
	return create_module(&definition);
}
