"""R-50: free text with ID card numbers and mobile numbers in it comes out masked (the staff console's exports)."""

from guanhao import pii


def test_r50_numbers_inside_text_are_masked():
    text = '{"phone": "13812345678", "id": "11010519900307123X", "note": "call 13912345678 now", "n": 123456789012}'
    masked = pii.mask_text(text)
    assert "13812345678" not in masked and "138****5678" in masked
    assert "11010519900307123X" not in masked and "110***********123X" in masked
    assert "139****5678" in masked
    assert "123456789012" in masked  # twelve digits are neither
    assert pii.mask_text("订单 2026030812345678901") == "订单 2026030812345678901"  # 19 digits: not an ID number
