/*
 * treeprotobuf: a statement's parse tree serialized as libpg_query's protobuf ParseResult, written straight from
 * its C nodes.
 *
 * The bytes decode to the same message as `pglast.parser.parse_sql_protobuf(sql)` (tests/policy/test_treedicts.py
 * proves it over the corpora and generated statements). libpg_query builds upb messages and has upb encode them,
 * which visits every field of a Node's oneof (some 270) for each node: most of a short statement's parse time. Here
 * libpg_query's generated field walk (pg_query_outfuncs_defs.c, from the pglast sdist setup.py builds against) writes
 * each field as it meets it, with the field numbers of the sdist's pg_query.proto (a header setup.py generates).
 * Fields are written in proto order, with proto3's rules: scalars and strings only when not zero or empty, enums as
 * libpg_query numbers them, a set message even when empty. The parser is pglast's, called through pointers looked up
 * in its extension alone (as treedicts.c does).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "pg_query.h"
#include "pg_query_internal.h"

#include "nodes/parsenodes.h"
#include "nodes/plannodes.h"
#include "nodes/value.h"

#include "pg_query_field_numbers.h"
#include "pglast_parser.h"

#undef snprintf

/* libpg_query's own cap on message nesting (encoder and decoder) */
#define MAX_NESTING PG_QUERY_PROTOBUF_MAX_DEPTH

typedef struct {
	char *data;
	size_t length;
	size_t capacity;
	int depth;
	int failed; /* out of memory, too deep, or a node this writer refuses */
	const char *refused;
	int parse_error; /* `refused` is what pglast's parser raises as a ParseError for the same tree */
} Buffer;

/* This thread's write in progress (per thread, and restored by each parse, as treedicts.c does: nothing here calls
   into Python during a write, but nothing depends on that). */
PER_THREAD Buffer *out_buffer;

static int reserve(size_t more)
{
	Buffer *b = out_buffer;
	if (b->failed)
		return 0;
	if (b->length + more <= b->capacity)
		return 1;
	size_t capacity = b->capacity * 2 > b->length + more ? b->capacity * 2 : b->length + more + 256;
	char *data = realloc(b->data, capacity);
	if (data == NULL) {
		b->failed = 1;
		return 0;
	}
	b->data = data;
	b->capacity = capacity;
	return 1;
}

static void put_varint(uint64_t value)
{
	if (!reserve(10))
		return;
	char *at = out_buffer->data + out_buffer->length;
	size_t n = 0;
	while (value >= 0x80) {
		at[n++] = (char) (value | 0x80);
		value >>= 7;
	}
	at[n++] = (char) value;
	out_buffer->length += n;
}

static void put_tag(int number, int wire_type)
{
	put_varint(((uint64_t) number << 3) | (uint64_t) wire_type);
}

static void put_bytes(int number, const char *value, size_t size)
{
	put_tag(number, 2);
	put_varint(size);
	if (reserve(size)) {
		memcpy(out_buffer->data + out_buffer->length, value, size);
		out_buffer->length += size;
	}
}

/* A length-delimited message: its tag now, its length once its content is written (then moved up behind it). */
static size_t begin_message(int number)
{
	put_tag(number, 2);
	/* the ParseResult around it all is a level of libpg_query's count */
	if (++out_buffer->depth >= MAX_NESTING && !out_buffer->failed) {
		out_buffer->failed = out_buffer->parse_error = 1;
		out_buffer->refused = "parse tree is nested too deeply to serialize to protobuf";
	} else if (!stack_left() && !out_buffer->failed) {
		out_buffer->failed = out_buffer->parse_error = 1;
		out_buffer->refused = "stack depth limit exceeded";
	}
	return out_buffer->length;
}

static void end_message(size_t start)
{
	Buffer *b = out_buffer;
	b->depth--;
	if (b->failed)
		return;
	size_t size = b->length - start;
	size_t width = 1;
	for (size_t rest = size >> 7; rest != 0; rest >>= 7)
		width++;
	if (!reserve(width))
		return;
	memmove(b->data + start + width, b->data + start, size);
	size_t n = 0;
	char *at = b->data + start;
	while (size >= 0x80) {
		at[n++] = (char) (size | 0x80);
		size >>= 7;
	}
	at[n++] = (char) size;
	b->length += width;
}

/* int32 fields are sign-extended to 64 bits on the wire; zero is not written (proto3) */
#define PUT_INTEGER(number, value) \
	if ((value) != 0) { \
		put_tag(number, 0); \
		put_varint((uint64_t) (int64_t) (value)); \
	}

#define FIELD(msgtype, outname) FIELD_##msgtype##_##outname

#define OUT_TYPE(typename, typename_c) int

static void _outNode(int number, const void *obj);

#define WRITE_INT_FIELD(msgtype, outname, outname_json, fldname) PUT_INTEGER(FIELD(msgtype, outname), node->fldname)
#define WRITE_UINT_FIELD(msgtype, outname, outname_json, fldname) \
	if (node->fldname != 0) { \
		put_tag(FIELD(msgtype, outname), 0); \
		put_varint((uint64_t) node->fldname); \
	}
#define WRITE_UINT64_FIELD WRITE_UINT_FIELD
#define WRITE_LONG_FIELD WRITE_INT_FIELD
#define WRITE_BOOL_FIELD(msgtype, outname, outname_json, fldname) \
	if (node->fldname) { \
		put_tag(FIELD(msgtype, outname), 0); \
		put_varint(1); \
	}

/* a double, unless all its bits are zero (-0.0 is written) */
#define WRITE_FLOAT_FIELD(msgtype, outname, outname_json, fldname) \
	{ \
		double value_ = node->fldname; \
		uint64_t bits_; \
		memcpy(&bits_, &value_, 8); \
		if (bits_ != 0) { \
			put_tag(FIELD(msgtype, outname), 1); \
			if (reserve(8)) { \
				memcpy(out_buffer->data + out_buffer->length, &value_, 8); \
				out_buffer->length += 8; \
			} \
		} \
	}

#define WRITE_CHAR_FIELD(msgtype, outname, outname_json, fldname) \
	if (node->fldname != 0) { \
		char char_ = node->fldname; \
		put_bytes(FIELD(msgtype, outname), &char_, 1); \
	}

#define WRITE_STRING_FIELD(msgtype, outname, outname_json, fldname) \
	if (node->fldname != NULL && node->fldname[0] != '\0') \
		put_bytes(FIELD(msgtype, outname), node->fldname, strlen(node->fldname));

#define WRITE_ENUM_FIELD(msgtype, enumtype, outname, outname_json, fldname) \
	PUT_INTEGER(FIELD(msgtype, outname), _enumToInt##enumtype(node->fldname))

#define WRITE_LIST_FIELD(msgtype, outname, outname_json, fldname) \
	if (node->fldname != NULL) { \
		const ListCell *cell_; \
		foreach(cell_, node->fldname) \
			_outNode(FIELD(msgtype, outname), lfirst(cell_)); \
	}

#define WRITE_NODE_FIELD(msgtype, outname, outname_json, fldname) _outNode(FIELD(msgtype, outname), &node->fldname);

#define WRITE_NODE_PTR_FIELD(msgtype, outname, outname_json, fldname) \
	if (node->fldname != NULL) \
		_outNode(FIELD(msgtype, outname), node->fldname);

/* a message field (not a Node): walked only while nothing is refused (a UNION chain recurses here, not in _outNode) */
#define WRITE_SPECIFIC_NODE_FIELD(msgtype, typename, typename_underscore, outname, outname_json, fldname) \
	{ \
		size_t start_ = begin_message(FIELD(msgtype, outname)); \
		if (!out_buffer->failed) \
			_out##typename(0, &node->fldname); \
		end_message(start_); \
	}

#define WRITE_SPECIFIC_NODE_PTR_FIELD(msgtype, typename, typename_underscore, outname, outname_json, fldname) \
	if (node->fldname != NULL) { \
		size_t start_ = begin_message(FIELD(msgtype, outname)); \
		if (!out_buffer->failed) \
			_out##typename(0, node->fldname); \
		end_message(start_); \
	}

/* repeated uint64, packed (proto3) */
#define WRITE_BITMAPSET_FIELD(msgtype, outname, outname_json, fldname) \
	if (!bms_is_empty(node->fldname)) { \
		size_t start_ = begin_message(FIELD(msgtype, outname)); \
		int member_ = -1; \
		while ((member_ = next_member(node->fldname, member_)) >= 0) \
			put_varint((uint64_t) member_); \
		end_message(start_); \
	}

static void refuse(const char *what)
{
	out_buffer->failed = 1;
	out_buffer->refused = what;
}

static void _outList(int unused, const List *node)
{
	const ListCell *cell;
	foreach(cell, node)
		_outNode(FIELD_List_items, lfirst(cell));
}

/* libpg_query writes an int or oid list's items as Nodes, which they are not: refused, never read as pointers */
static void _outIntList(int unused, const List *node)
{
	refuse("an integer list in the parse tree");
}

static void _outOidList(int unused, const List *node)
{
	refuse("an oid list in the parse tree");
}

static void _outInteger(int unused, const Integer *node)
{
	PUT_INTEGER(FIELD_Integer_ival, node->ival)
}

static void _outBoolean(int unused, const Boolean *node)
{
	if (node->boolval) {
		put_tag(FIELD_Boolean_boolval, 0);
		put_varint(1);
	}
}

static void put_string(int number, const char *value)
{
	if (value != NULL && value[0] != '\0')
		put_bytes(number, value, strlen(value));
}

static void _outFloat(int unused, const Float *node)
{
	put_string(FIELD_Float_fval, node->fval);
}

static void _outString(int unused, const String *node)
{
	put_string(FIELD_String_sval, node->sval);
}

static void _outBitString(int unused, const BitString *node)
{
	put_string(FIELD_BitString_bsval, node->bsval);
}

/* the value (fields 1-5) comes before isnull (10) and location (11) */
static void _outAConst(int unused, const A_Const *node)
{
	if (!node->isnull) {
		size_t start;
		switch (nodeTag(&node->val.node)) {
		case T_Integer:
			start = begin_message(FIELD_A_Const_ival);
			_outInteger(0, &node->val.ival);
			break;
		case T_Float:
			start = begin_message(FIELD_A_Const_fval);
			_outFloat(0, &node->val.fval);
			break;
		case T_Boolean:
			start = begin_message(FIELD_A_Const_boolval);
			_outBoolean(0, &node->val.boolval);
			break;
		case T_String:
			start = begin_message(FIELD_A_Const_sval);
			_outString(0, &node->val.sval);
			break;
		case T_BitString:
			start = begin_message(FIELD_A_Const_bsval);
			_outBitString(0, &node->val.bsval);
			break;
		default:
			refuse("an A_Const of an unknown kind");
			return;
		}
		end_message(start);
	} else {
		put_tag(FIELD_A_Const_isnull, 0);
		put_varint(1);
	}
	PUT_INTEGER(FIELD_A_Const_location, node->location)
}

#include "pg_query_enum_defs.c"
#include "pg_query_outfuncs_defs.c"

#define OUT_NODE(typename, typename_c, typename_underscore, typename_underscore_upcase, typename_cast, fldname) \
	{ \
		size_t start_ = begin_message(FIELD_Node_##fldname); \
		_out##typename_c(0, (const typename_cast *) obj); \
		end_message(start_); \
	}

/* A Node field: the Node message, holding its one set member; a NULL node is an empty Node. */
static void _outNode(int number, const void *obj)
{
	size_t start = begin_message(number);
	if (obj != NULL && !out_buffer->failed) {
		switch (nodeTag(obj)) {
#include "pg_query_outfuncs_conds.c"
		default:
			refuse("a node type libpg_query does not serialize");
		}
	}
	end_message(start);
}

static PyObject *write_statements(const List *tree)
{
	Buffer buffer = {NULL, 0, 0, 0, 0, NULL, 0};
	Buffer *outer = out_buffer;
	out_buffer = &buffer;
	PUT_INTEGER(FIELD_ParseResult_version, PG_VERSION_NUM)
	const ListCell *cell;
	foreach(cell, tree) {
		size_t start = begin_message(FIELD_ParseResult_stmts);
		_outRawStmt(0, lfirst(cell));
		end_message(start);
	}
	out_buffer = outer;
	PyObject *result = NULL;
	if (!buffer.failed)
		result = PyBytes_FromStringAndSize(buffer.data, (Py_ssize_t) buffer.length);
	else if (buffer.parse_error) { /* pglast's error, with no position, as its parser gives it */
		PyObject *args = Py_BuildValue("(sO)", buffer.refused, Py_None);
		if (args != NULL) {
			PyErr_SetObject(parse_error, args);
			Py_DECREF(args);
		}
	} else if (buffer.refused != NULL)
		PyErr_SetString(PyExc_ValueError, buffer.refused);
	else
		PyErr_NoMemory();
	free(buffer.data);
	return result;
}

static PyObject *parse(PyObject *module, PyObject *sql)
{
	return parse_then(sql, write_statements);
}

/* -- splicing a serialized SELECT (rewrite.py's common shape) ------------------------------------------------- */

typedef struct {
	int number;
	int wire_type;
	const unsigned char *start; /* the field's key */
	const unsigned char *value; /* its value (a length-delimited field's payload) */
	const unsigned char *end;
} Field;

static int read_varint(const unsigned char **at, const unsigned char *end, uint64_t *value)
{
	uint64_t result = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (*at >= end)
			return 0;
		unsigned char byte = *(*at)++;
		result |= (uint64_t) (byte & 0x7F) << shift;
		if (byte < 0x80) {
			*value = result;
			return 1;
		}
	}
	return 0;
}

/* The next field of a message, or 0 at its end or at anything but the wire types libpg_query writes. */
static int next_field(const unsigned char **at, const unsigned char *end, Field *field)
{
	uint64_t key, size;
	if (*at >= end)
		return 0;
	field->start = *at;
	if (!read_varint(at, end, &key) || key >> 3 == 0 || key >> 3 > INT32_MAX)
		return -1;
	field->number = (int) (key >> 3);
	field->wire_type = (int) (key & 7);
	field->value = *at;
	switch (field->wire_type) {
	case 0:
		if (!read_varint(at, end, &size))
			return -1;
		break;
	case 1:
		if (end - *at < 8)
			return -1;
		*at += 8;
		break;
	case 2:
		if (!read_varint(at, end, &size) || size > (uint64_t) (end - *at))
			return -1;
		field->value = *at;
		*at += size;
		break;
	case 5:
		if (end - *at < 4)
			return -1;
		*at += 4;
		break;
	default:
		return -1;
	}
	field->end = *at;
	return 1;
}

/* The one length-delimited field `number` of a message: 1 with it in `found`, 0 when there is not exactly one. */
static int only_one(const unsigned char *data, const unsigned char *end, int number, Field *found)
{
	Field field;
	int count = 0, status;
	while ((status = next_field(&data, end, &field)) > 0) {
		if (field.number == number) {
			if (field.wire_type != 2)
				return 0;
			*found = field;
			count++;
		}
	}
	return status == 0 && count == 1;
}

static void put_raw(const unsigned char *from, const unsigned char *to)
{
	size_t size = (size_t) (to - from);
	if (reserve(size)) {
		memcpy(out_buffer->data + out_buffer->length, from, size);
		out_buffer->length += size;
	}
}

static PyObject *splice_select(PyObject *module, PyObject *args)
{
	const unsigned char *data, *limit;
	Py_ssize_t size, limit_size, from_items;
	PyObject *replaced;
	int limit_option;
	if (!PyArg_ParseTuple(args, "y#O!y#ni", &data, &size, &PyDict_Type, &replaced, &limit, &limit_size, &from_items,
						  &limit_option))
		return NULL;
	const unsigned char *end = data + size;
	Field statement, stmt, select;
	if (!only_one(data, end, FIELD_ParseResult_stmts, &statement) ||
		!only_one(statement.value, statement.end, FIELD_RawStmt_stmt, &stmt) ||
		!only_one(stmt.value, stmt.end, FIELD_Node_select_stmt, &select))
		Py_RETURN_NONE;
	{ /* the Node holds the SELECT alone */
		const unsigned char *at = stmt.value;
		Field field;
		if (next_field(&at, stmt.end, &field) != 1 || field.number != FIELD_Node_select_stmt || at != stmt.end)
			Py_RETURN_NONE;
	}
	Buffer buffer = {NULL, 0, 0, 0, 0, NULL, 0};
	Buffer *outer = out_buffer;
	out_buffer = &buffer;
	PyObject *result = NULL;
	Py_ssize_t from_index = 0;
	int status;
	put_raw(data, statement.start);
	size_t statement_start = begin_message(FIELD_ParseResult_stmts);
	put_raw(statement.value, stmt.start);
	size_t stmt_start = begin_message(FIELD_RawStmt_stmt);
	size_t select_start = begin_message(FIELD_Node_select_stmt);
	const unsigned char *at = select.value;
	Field field;
	while ((status = next_field(&at, select.end, &field)) > 0) {
		if (field.number == FIELD_SelectStmt_from_clause) {
			PyObject *index = PyLong_FromSsize_t(from_index++);
			PyObject *item = index != NULL ? PyDict_GetItemWithError(replaced, index) : NULL;
			Py_XDECREF(index);
			if (PyErr_Occurred())
				break;
			if (item != NULL && PyBytes_Check(item))
				put_bytes(FIELD_SelectStmt_from_clause, PyBytes_AS_STRING(item), (size_t) PyBytes_GET_SIZE(item));
			else if (item != NULL) {
				PyErr_SetString(PyExc_TypeError, "a replaced FROM item must be bytes");
				break;
			} else
				put_raw(field.start, field.end);
		} else if (field.number != FIELD_SelectStmt_limit_count && field.number != FIELD_SelectStmt_limit_option)
			put_raw(field.start, field.end);
	}
	if (!PyErr_Occurred() && status == 0 && from_index == from_items) {
		put_bytes(FIELD_SelectStmt_limit_count, (const char *) limit, (size_t) limit_size);
		PUT_INTEGER(FIELD_SelectStmt_limit_option, limit_option)
		end_message(select_start);
		end_message(stmt_start);
		put_raw(stmt.end, statement.end);
		end_message(statement_start);
		put_raw(statement.end, end);
		if (!buffer.failed)
			result = PyBytes_FromStringAndSize(buffer.data, (Py_ssize_t) buffer.length);
		else
			PyErr_NoMemory();
	} else if (!PyErr_Occurred()) {
		result = Py_None;
		Py_INCREF(result);
	}
	out_buffer = outer;
	free(buffer.data);
	return result;
}

static PyMethodDef methods[] = {
	{"parse", parse, METH_O,
	 "parse(sql) -> bytes: the serialized ParseResult, the message pglast.parser.parse_sql_protobuf(sql) gives.\n"
	 "Raises pglast's ParseError for bad SQL and for a tree nested too deeply (as pglast does), ValueError for a\n"
	 "node libpg_query cannot serialize."},
	{"splice_select", splice_select, METH_VARARGS,
	 "splice_select(serialized, replaced, limit_count, from_items, limit_option) -> bytes | None: the serialized\n"
	 "ParseResult of one SELECT with the FROM items at the indexes of `replaced` (int -> serialized Node) swapped,\n"
	 "its LIMIT the serialized Node `limit_count` and its limit option `limit_option`; None when it is not one\n"
	 "SELECT with `from_items` FROM items, or holds anything libpg_query does not write."},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {PyModuleDef_HEAD_INIT, "treeprotobuf", NULL, -1, methods};

PyMODINIT_FUNC PyInit_treeprotobuf(void)
{
	return create_module(&definition);
}
