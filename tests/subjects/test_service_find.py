"""Staff look a shop up across every subject (guanhao.subjects.service.find_shops, SPEC R-62: staff see all)."""

from guanhao.subjects import service as subjects
from tests import make


def test_r62_a_shop_is_found_by_any_id_or_part_of_a_name_across_subjects(session, now):
    one = make.subject(session, now=now, name="杭州云栖茶业有限公司")
    two = make.subject(session, now=now, name="深圳云栖贸易有限公司")
    a = make.ready_shop(session, now=now, subject_id=one.id, shop_fields={"name": "云栖茶叶旗舰店"})
    b = make.ready_shop(session, now=now, subject_id=two.id, shop_fields={"name": "云栖茶具专营店"})
    c = make.ready_shop(session, now=now, subject_id=two.id, shop_fields={"name": "海边小店_100%"})

    def found(query: str) -> set[str]:
        return {s.id for s in subjects.find_shops(session, query, limit=50)}

    assert found("云栖") == {a.id, b.id, c.id}  # by shop name, or (c) by its subject's name
    assert found("茶具") == {b.id}
    assert found(a.id) == {a.id}
    assert found(one.id) == {a.id}
    assert found(b.official_account_id) == {b.id}
    assert found("_100%") == {c.id}  # LIKE wildcards are taken literally
    assert found("%") == {c.id}
    assert found("  ") == set()
    assert len(subjects.find_shops(session, "云栖", limit=2)) == 2
